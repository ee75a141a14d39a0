"""The seam between model back-ends and the rest: the registry, each back-end's category
options, and the configured back-end chosen by ``models.backend`` (no models loaded here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from prelabel.backends import (
    backend_names,
    backend_spec,
    load_backend,
    model_sources,
    option_reader,
)
from prelabel.config import CategoryOptions, PipelineSettings, Settings
from prelabel.errors import ConfigError, ModelLoadError, TaxonomyError
from prelabel.taxonomy import Category, build_taxonomy, load_categories_file

DEFAULTS = PipelineSettings(box_threshold=0.3, text_threshold=0.25, score_threshold=0.45)
CATS = [Category(id=1, name="person", has_instances=True), Category(id=2, name="sky")]


def reader(name: str) -> object:
    return backend_spec(name).option_reader()


def test_default_backend_is_grounded_sam_and_sam3_is_reserved() -> None:
    assert Settings().models.backend == "grounded_sam"
    assert backend_names() == ("grounded_sam", "sam3")
    spec = backend_spec("grounded_sam")
    assert spec.category_options == {"box_threshold", "text_threshold", "mask_threshold"}
    assert spec.model_roles == ("grounding_dino", "sam", "clipseg")
    assert backend_spec("sam3").category_options == {"score_threshold"}


def test_each_prompt_resolves_the_options_its_backend_reads() -> None:
    options = {"person": CategoryOptions(box_threshold=0.6)}
    grounded = build_taxonomy(CATS, options, DEFAULTS, reader=reader("grounded_sam"))
    assert dict(grounded.things[0].options) == {
        "box_threshold": 0.6,
        "text_threshold": 0.25,
        "mask_threshold": 0.4,
    }
    sam3_options = {"person": CategoryOptions(score_threshold=0.7)}
    sam3 = build_taxonomy(CATS, sam3_options, DEFAULTS, reader=reader("sam3"))
    assert dict(sam3.things[0].options) == {"score_threshold": 0.7}
    assert dict(sam3.stuff[0].options) == {"score_threshold": 0.45}
    with pytest.raises(KeyError, match="box_threshold"):
        sam3.things[0].option("box_threshold")


@pytest.mark.parametrize(
    ("backend", "options", "unread"),
    [
        ("sam3", CategoryOptions(box_threshold=0.4), "box_threshold"),
        ("sam3", CategoryOptions(text_threshold=0.4, mask_threshold=0.5), "mask_threshold"),
        ("grounded_sam", CategoryOptions(score_threshold=0.4), "score_threshold"),
    ],
)
def test_an_option_the_backend_does_not_read_is_an_error_naming_it(
    backend: str, options: CategoryOptions, unread: str
) -> None:
    with pytest.raises(TaxonomyError, match=rf"'person': .*{unread}.* of the {backend} back-end"):
        build_taxonomy(CATS, {"person": options}, DEFAULTS, reader=reader(backend))


def test_categories_file_keeps_flat_keys_and_refuses_unknown_ones(tmp_path: Path) -> None:
    path = tmp_path / "cats.yaml"
    path.write_text(
        "categories:\n"
        "  - {id: 1, name: person, has_instances: true, score_threshold: 0.6}\n"
        "  - {id: 2, name: sky}\n",
        encoding="utf-8",
    )
    categories, options = load_categories_file(path)
    assert options["person"].score_threshold == 0.6
    with pytest.raises(TaxonomyError, match="score_threshold is not an option of the grounded_sam"):
        build_taxonomy(categories, options, DEFAULTS, reader=reader("grounded_sam"))
    path.write_text("categories:\n  - {id: 1, name: person, iou: 0.6}\n", encoding="utf-8")
    with pytest.raises(TaxonomyError, match="iou"):
        load_categories_file(path)


def test_unknown_and_reserved_backends_are_config_errors() -> None:
    unknown = Settings.model_validate({"models": {"backend": "yolo"}})
    with pytest.raises(ConfigError, match=r"models\.backend 'yolo': use grounded_sam, sam3"):
        load_backend(unknown)
    reserved = Settings.model_validate({"models": {"backend": "sam3"}})
    with pytest.raises(ConfigError, match="'sam3' is reserved but not available"):
        load_backend(reserved)
    # The dataset check asks first, so a run stops before any sample.
    with pytest.raises(ConfigError, match="'sam3' is reserved but not available"):
        option_reader(reserved)


def test_model_sources_follow_the_backend_layout(tmp_path: Path) -> None:
    settings = Settings()
    assert model_sources(settings, None) == {
        "grounding_dino": settings.models.grounding_dino,
        "sam": settings.models.sam,
        "clipseg": settings.models.clipseg,
    }
    with pytest.raises(ModelLoadError, match="lacks the subdirectories grounding_dino, sam"):
        model_sources(settings, tmp_path)


def test_the_registry_loads_no_torch() -> None:
    """Config checks (the dataset check, predict's taxonomy) import the registry; they must not
    pay for torch, which a run that stops at a config problem never needs."""
    code = "import sys, prelabel.backends; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
