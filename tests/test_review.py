"""The review session: tuning as a config would take it, measuring, and the saved config.

The round trip is the promise the notebook makes: what a person tuned and saved is what
``prelabel run --config`` predicts with. It is checked on the bytes a run would upload (a dry
run saves them), against the session's own predictions, with the models found through the
file alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from segments import SegmentsClient

from prelabel.backends.grounded_sam.backend import GroundedSam
from prelabel.backends.grounded_sam.loading import LoadedModels
from prelabel.config import CategoryOptions, load_settings
from prelabel.emulator import Emulator
from prelabel.errors import ConfigError, TaxonomyError
from prelabel.formats.label import encode_label
from prelabel.pipeline.pipeline import Pipeline
from prelabel.review import ReviewSession
from prelabel.run.dataset import run_dataset
from prelabel.run.job import RunOptions
from prelabel.run.models import pipeline_loader
from prelabel.segments.client import SegmentsApi
from prelabel.state import StateStore
from tests.connector_helpers import (
    EMULATOR_API_KEY,
    LABELING_PIPELINE,
    SAM3_PIPELINE,
    assert_valid_prelabel,
    make_settings,
)
from tests.fixtures.emulator import seed_dataset_via_sdk
from tests.test_evaluation_run import DATASET, SIZE, add_labeled_sample, demo_taxonomy


def open_session(emulator: Emulator, tmp_path: Path, **kwargs: object) -> ReviewSession:
    api = SegmentsApi.connect(EMULATOR_API_KEY, make_settings(emulator.url).remote)
    return ReviewSession(
        api,
        DATASET,
        settings=make_settings(emulator.url),
        state_dir=tmp_path / "state",
        **kwargs,  # type: ignore[arg-type]
    )


def labeled_session(
    emulator: Emulator,
    client: SegmentsClient,
    models: LoadedModels,
    tmp_path: Path,
    n_images: int,
) -> ReviewSession:
    """A session on ``jane/eval``: ``n_images`` unlabeled samples, and one whose label a person
    made, equal to the untuned prediction (so it scores PQ 1 before tuning)."""
    seed_dataset_via_sdk(client, name="eval", n_images=n_images, size=SIZE)
    pipeline = Pipeline(GroundedSam(models), LABELING_PIPELINE)
    add_labeled_sample(emulator, pipeline, demo_taxonomy(), "human.png", seed=7)
    return open_session(emulator, tmp_path, pipeline=pipeline)


@pytest.fixture
def session(
    emulator: Emulator, segments_client: SegmentsClient, tiny_models: LoadedModels, tmp_path: Path
) -> Iterator[ReviewSession]:
    opened = labeled_session(emulator, segments_client, tiny_models, tmp_path, n_images=2)
    yield opened
    opened.close()


def test_tuning_refuses_what_a_config_file_would_refuse(session: ReviewSession) -> None:
    before = dict(session.category_options), session.pipeline.settings, session.taxonomy

    with pytest.raises(ConfigError, match="box_threshold"):
        session.tune("car", box_threshold=1.5)
    with pytest.raises(ConfigError, match="colour"):
        session.tune("car", colour="red")
    with pytest.raises(ConfigError, match="min_area"):
        session.tune_pipeline(min_area=-1)
    with pytest.raises(TaxonomyError, match="unknown category 'bus'"):
        session.tune("bus", prompt="bus")

    assert (dict(session.category_options), session.pipeline.settings, session.taxonomy) == before


def test_pipeline_thresholds_are_the_default_of_every_category_without_its_own(
    session: ReviewSession,
) -> None:
    session.tune("car", box_threshold=0.2)
    session.tune_pipeline(box_threshold=0.7, mask_threshold=0.6)

    prompts = {p.name: p for p in session.taxonomy.prompts}
    assert prompts["person"].option("box_threshold") == 0.7
    assert prompts["car"].option("box_threshold") == 0.2
    assert (
        prompts["sky"].option("mask_threshold") == prompts["road"].option("mask_threshold") == 0.6
    )
    assert session.changes() == [
        "pipeline.box_threshold: 0.0 -> 0.7",
        "pipeline.mask_threshold: 0.4 -> 0.6",
        "car.box_threshold: None -> 0.2",
    ]


def test_a_given_pipeline_is_where_tuning_starts(
    emulator: Emulator, segments_client: SegmentsClient, tiny_models: LoadedModels, tmp_path: Path
) -> None:
    seed_dataset_via_sdk(segments_client, name="eval", n_images=1, size=SIZE)
    pipeline = Pipeline(
        GroundedSam(tiny_models), LABELING_PIPELINE.model_copy(update={"box_threshold": 0.6})
    )

    session = open_session(emulator, tmp_path, pipeline=pipeline)
    try:
        assert session.changes() == []
        assert session.settings.pipeline == pipeline.settings
        assert {p.option("box_threshold") for p in session.taxonomy.things} == {0.6}
    finally:
        session.close()


def test_measure_scores_the_start_and_the_tuned_settings(
    session: ReviewSession, emulator: Emulator
) -> None:
    emulator.clear_requests()

    before = session.measure(tuned=False)
    session.tune_pipeline(min_area=10**6)  # nothing left: every ground-truth segment is missed
    after = session.measure()
    again_before = session.measure(tuned=False)

    assert before.result.images == after.result.images == 1
    assert before.result.overall.pq == pytest.approx(1.0)  # the label is the untuned prediction
    assert after.result.overall.pq == 0.0
    assert again_before.result.overall.pq == pytest.approx(1.0)
    assert {r.method for r in emulator.requests} == {"GET"}  # measuring writes nothing


def test_a_saved_config_keeps_every_tuned_category_setting(
    session: ReviewSession, tmp_path: Path
) -> None:
    """Thresholds are tuned as often as prompts: each one a person set must reach the file."""
    session.tune("car", box_threshold=0.2, text_threshold=0.35)
    session.tune("person", prompt="person . pedestrian", box_threshold=0.45)
    session.tune("sky", mask_threshold=0.55)
    session.tune("road", ignore=True)

    saved = load_settings(session.save_config(tmp_path / "tuned.yaml")).categories

    assert saved["car"] == CategoryOptions(box_threshold=0.2, text_threshold=0.35)
    assert saved["person"] == CategoryOptions(prompt="person . pedestrian", box_threshold=0.45)
    assert saved["sky"] == CategoryOptions(mask_threshold=0.55)
    assert saved["road"] == CategoryOptions(ignore=True)


@pytest.mark.parametrize("overwrite_prelabels", [False, True])
def test_push_never_writes_over_a_label_a_person_finished(
    session: ReviewSession, emulator: Emulator, overwrite_prelabels: bool
) -> None:
    """A person finishes a sample between the prediction and the push: their label stays,
    even when pre-labels may be overwritten; the other accepted sample is written."""
    finished, free = session.samples(limit=2)
    items = [session.predict(finished), session.predict(free)]
    emulator.set_label_status(finished.uuid, "ground-truth", "LABELED")

    outcomes = session.push(items, overwrite_prelabels=overwrite_prelabels)

    assert [o.result for o in outcomes] == ["skipped", "labeled"]
    assert "LABELED" in str(outcomes[0].reason)
    assert emulator.label_write_count(finished.uuid) == 0
    assert emulator.get_label(finished.uuid)["label_status"] == "LABELED"  # type: ignore[index]
    assert emulator.get_label(free.uuid)["label_status"] == "PRELABELED"  # type: ignore[index]


def test_a_saved_config_makes_prelabel_run_predict_what_the_session_predicted(
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed_dataset_via_sdk(segments_client, name="eval", n_images=2, size=SIZE)
    monkeypatch.chdir(tiny_models_dir.parent)  # the models given as a relative folder
    session = open_session(emulator, tmp_path, models_dir=Path(tiny_models_dir.name))
    try:
        samples = session.samples(limit=2)
        untuned = [encode_label(session.predict(s).prediction).png for s in samples]
        session.tune("person", prompt="person . pedestrian")
        session.tune("sky", ignore=True)
        session.tune_pipeline(max_detections=1, min_area=20)
        tuned = {s.uuid: encode_label(session.predict(s).prediction).png for s in samples}
        path = session.save_config(tmp_path / "tuned.yaml")
        expected_settings = session.tuned_settings()
    finally:
        session.close()
    assert list(tuned.values()) != untuned  # the tuning changed what is predicted

    monkeypatch.chdir(tmp_path)  # the run starts elsewhere: the file alone finds the models
    settings = load_settings(path)
    assert settings.pipeline == expected_settings.pipeline
    assert settings.categories["person"] == CategoryOptions(prompt="person . pedestrian")
    assert settings.models.sam == str(tiny_models_dir / "sam")  # found without --models
    options = RunOptions(dataset=DATASET, dry_run=True, output_dir=tmp_path / "run")
    with StateStore.in_dir(tmp_path / "run-state") as state:
        summary = run_dataset(
            EMULATOR_API_KEY,
            settings,
            options,
            state=state,
            load_pipeline=pipeline_loader(settings, None),
        )
    assert summary.counts == {"dry-run": 2}
    for uuid, png in tuned.items():
        assert (tmp_path / "run" / "dry-run" / f"{uuid}.png").read_bytes() == png


def test_a_sam3_session_tunes_its_own_options_and_pushes_a_label(
    emulator: Emulator, segments_client: SegmentsClient, tiny_models_dir: Path, tmp_path: Path
) -> None:
    """``models.backend: sam3`` through the session's own loading: its category option is
    ``score_threshold``, Grounding DINO's are refused naming the back-end, and a pushed
    prediction is a non-empty pre-label."""
    seeded = seed_dataset_via_sdk(segments_client, name="eval", n_images=1, size=SIZE)
    settings = make_settings(emulator.url, pipeline=SAM3_PIPELINE, backend="sam3")
    api = SegmentsApi.connect(EMULATOR_API_KEY, settings.remote)
    session = ReviewSession(
        api, DATASET, settings=settings, models_dir=tiny_models_dir, state_dir=tmp_path / "s"
    )
    try:
        with pytest.raises(TaxonomyError, match="box_threshold is not an option of the sam3"):
            session.tune("person", box_threshold=0.4)
        session.tune("car", score_threshold=1.0)  # no instance scores above 1: no car
        (sample,) = session.samples(limit=1)
        item = session.predict(sample)
        categories = {s.category_id for s in item.prediction.segments}
        assert 1 in categories and 2 not in categories  # person found, car tuned away
        (outcome,) = session.push([item])
    finally:
        session.close()
    assert outcome.result == "labeled"
    attributes, _ = assert_valid_prelabel(
        segments_client, sample.uuid, image_size=SIZE, category_ids=[1, 3, 4]
    )
    assert attributes["annotations"]
    assert list(seeded.sample_uuids) == [sample.uuid]
