"""The review notebook's UI, driven as a person would but without a browser.

Widgets are changed by setting their ``value`` and buttons pressed with ``click()``: the same
callbacks the notebook front-end triggers. Results are read from the session, from the
emulator (what was written) and from what the widgets show.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import ipywidgets as widgets
import pytest
from pydantic import BaseModel, Field
from segments import SegmentsClient

from prelabel.backends.grounded_sam.loading import LoadedModels
from prelabel.config import CategoryOptions, PipelineSettings, load_settings
from prelabel.emulator import Emulator
from prelabel.formats.label import label_score
from prelabel.review.controls import PIPELINE_CONTROLS, available, field_control
from prelabel.review.widgets import ACCEPTED, REJECTED, ReviewApp
from tests.test_evaluation_run import DATASET
from tests.test_review import labeled_session

# --- controls from settings fields ---------------------------------------------------------


class Knobs(BaseModel):
    """Stands in for settings another branch adds: controls must come from declarations."""

    method: Literal["seed", "regions"] = "seed"
    level: float = Field(default=0.1, ge=0, le=1)
    kernel: int = Field(default=20, ge=0)
    factor: float = Field(default=2.0, gt=0)
    points: int = Field(default=3, ge=1, le=64)
    enabled: bool = True
    phrase: str | None = None


def test_each_field_gets_a_control_of_its_type_and_bounds() -> None:
    made = {name: field_control(Knobs, name, getattr(Knobs(), name)) for name in Knobs.model_fields}

    assert isinstance(made["method"], widgets.Dropdown)
    assert list(made["method"].options) == ["seed", "regions"]
    assert isinstance(made["level"], widgets.FloatSlider)
    assert (made["level"].min, made["level"].max, made["level"].value) == (0, 1, 0.1)
    assert isinstance(made["kernel"], widgets.BoundedIntText) and made["kernel"].min == 0
    assert isinstance(made["factor"], widgets.BoundedFloatText)
    assert isinstance(made["points"], widgets.IntSlider) and made["points"].max == 64
    assert isinstance(made["enabled"], widgets.Checkbox) and made["enabled"].value is True
    assert isinstance(made["phrase"], widgets.Text) and made["phrase"].value == ""


def test_pipeline_controls_are_the_named_settings_that_exist() -> None:
    names = available(PipelineSettings, PIPELINE_CONTROLS)

    assert "min_area" in names and "box_threshold" in names
    assert all(name in PipelineSettings.model_fields for name in names)
    assert names == [n for n in PIPELINE_CONTROLS if n in PipelineSettings.model_fields]


# --- the app against the emulator ----------------------------------------------------------


@pytest.fixture
def app(
    emulator: Emulator, segments_client: SegmentsClient, tiny_models: LoadedModels, tmp_path: Path
) -> Iterator[ReviewApp]:
    """``jane/eval`` with three unlabeled samples and one a person labeled (= the prediction)."""
    session = labeled_session(emulator, segments_client, tiny_models, tmp_path, n_images=3)
    yield ReviewApp(session, limit=10, measure_limit=5)
    session.close()


def test_the_gallery_is_least_confident_first_and_a_card_shows_its_sample(app: ReviewApp) -> None:
    names = [e.sample.name for e in app.entries]
    scores = [e.score for e in app.entries]

    assert sorted(names) == ["image_000.png", "image_001.png", "image_002.png"]  # not human.png
    assert scores == sorted(scores)
    for entry in app.entries:
        assert entry.item is not None
        assert entry.score == label_score(entry.item.prediction)
    assert len(app.cards) == len(app.gallery.children) == 3
    assert app.current == 0 and app.entries[0].sample.name in app.title.value

    app.cards[2].click()  # the sample in view: image and overlay, then the segment table

    entry = app.entries[2]
    assert app.current == 2
    assert entry.sample.name in app.title.value
    assert bytes(app.image.value).startswith(b"\x89PNG")
    assert entry.item is not None
    for row in entry.item.rows():
        assert f"<td>{row['category']}</td>" in app.table.value
        assert f"<td>{row['area']}</td>" in app.table.value
    assert app.cards[2].button_style == "info" and app.cards[0].button_style == ""


def test_changing_a_pipeline_control_predicts_the_sample_in_view_again(app: ReviewApp) -> None:
    app.cards[1].click()
    shown = app.entries[1]
    assert shown.item is not None and shown.item.prediction.segments

    app.pipeline_controls["min_area"].value = 10**6

    assert app.session.pipeline.settings.min_area == 10**6
    assert shown.item is not None and shown.item.prediction.segments == ()
    assert "no segments" in app.table.value
    assert "pipeline.min_area: 0 -&gt; 1000000" in app.message.value
    assert app.entries[0].version < app.version  # the others are predicted again when shown
    app.cards[0].click()
    assert app.entries[0].version == app.version
    assert app.entries[0].item is not None and app.entries[0].item.prediction.segments == ()


def test_category_controls_tune_their_category_and_a_refused_change_springs_back(
    app: ReviewApp,
) -> None:
    person = app.category_controls["person"]
    assert set(person) == {"prompt", "box_threshold", "text_threshold", "ignore"}
    assert set(app.category_controls["sky"]) == {"prompt", "mask_threshold", "ignore"}

    person["ignore"].value = True
    assert "person" not in [p.name for p in app.session.taxonomy.prompts]
    shown = app.entries[app.current or 0].item
    assert shown is not None and 1 not in {s.category_id for s in shown.prediction.segments}

    person["prompt"].value = "person . pedestrian"
    assert app.session.category_options["person"] == CategoryOptions(
        prompt="person . pedestrian", ignore=True
    )
    app.pipeline_controls["box_threshold"].value = 0.5
    assert app.category_controls["car"]["box_threshold"].value == 0.5  # follows the default
    assert app.session.category_options.get("car", CategoryOptions()).box_threshold is None

    for name in ("car", "sky"):
        app.category_controls[name]["ignore"].value = True
    version = app.version

    app.category_controls["road"]["ignore"].value = True  # nothing left to predict

    assert "not changed" in app.message.value and "every category is ignored" in app.message.value
    assert app.category_controls["road"]["ignore"].value is False
    assert app.version == version


def test_accept_reject_and_push_show_every_items_outcome(
    app: ReviewApp, emulator: Emulator
) -> None:
    first, second, third = (e.sample for e in app.entries)
    app.accept_button.click()  # first, then the view moves on
    assert app.current == 1
    app.accept_button.click()
    app.reject_button.click()
    assert [e.decision for e in app.entries] == [ACCEPTED, ACCEPTED, REJECTED]
    # A person starts on the second sample between the decision and the push.
    emulator.set_label_status(second.uuid, "ground-truth", "LABELING_IN_PROGRESS")

    app.push_button.click()

    outcomes = {e.sample.name: e.outcome for e in app.entries}
    assert outcomes[first.name] is not None and outcomes[first.name].result == "labeled"
    assert outcomes[second.name] is not None and outcomes[second.name].result == "skipped"
    assert outcomes[third.name] is None
    assert emulator.get_label(first.uuid)["label_status"] == "PRELABELED"  # type: ignore[index]
    assert emulator.label_write_count(second.uuid) == 0
    assert emulator.get_label(third.uuid) is None
    table = app.outcomes.value
    assert first.name in table and second.name in table and third.name not in table
    assert "LABELING_IN_PROGRESS" in table
    assert "pushed 1 of 2" in app.message.value


def test_measure_shows_pq_before_and_after_tuning_and_save_writes_the_config(
    app: ReviewApp, tmp_path: Path
) -> None:
    app.measure_button.click()
    assert "<td>before tuning</td><td>100.0</td>" in app.measurements.value
    assert "<td>now (0 changes)</td><td>100.0</td>" in app.measurements.value

    app.pipeline_controls["min_area"].value = 10**6
    app.measure_button.click()

    assert "<td>before tuning</td><td>100.0</td>" in app.measurements.value
    assert "<td>now (1 changes)</td><td>0.0</td>" in app.measurements.value

    app.pipeline_controls["min_area"].value = 42  # then save what was tuned
    app.category_controls["car"]["prompt"].value = "car . vehicle"
    app.config_path.value = str(tmp_path / "tuned.yaml")

    app.save_button.click()

    settings = load_settings(tmp_path / "tuned.yaml")
    assert settings.pipeline.min_area == 42
    assert settings.categories["car"].prompt == "car . vehicle"
    assert settings == app.session.tuned_settings()
    assert f"prelabel run --dataset {DATASET} --config {tmp_path / 'tuned.yaml'}" in (
        app.message.value
    )
