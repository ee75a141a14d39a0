"""The seam between model back-ends and the rest: the registry, each back-end's category
options, and the configured back-end chosen by ``models.backend`` (no models loaded here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
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


def test_default_backend_is_grounded_sam_and_sam3_is_registered() -> None:
    assert Settings().models.backend == "grounded_sam"
    assert backend_names() == ("grounded_sam", "sam3")
    spec = backend_spec("grounded_sam")
    assert spec.category_options == {"box_threshold", "text_threshold", "mask_threshold"}
    assert spec.model_roles == ("grounding_dino", "sam", "clipseg")
    assert backend_spec("sam3").category_options == {"score_threshold"}
    assert backend_spec("sam3").model_roles == ("sam3",)


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


def test_unknown_and_reserved_backends_are_config_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import prelabel.backends as backends

    unknown = Settings.model_validate({"models": {"backend": "yolo"}})
    with pytest.raises(ConfigError, match=r"models\.backend 'yolo': use grounded_sam, sam3"):
        load_backend(unknown)
    # A name reserved for a back-end whose package has not landed yet.
    later = backend_spec("sam3").__class__(
        name="later", description="", batching=False, model_roles=(), category_options=frozenset()
    )
    monkeypatch.setitem(backends._SPECS, "later", later)
    reserved = Settings.model_validate({"models": {"backend": "later"}})
    with pytest.raises(ConfigError, match="'later' is reserved but not available"):
        load_backend(reserved)
    # The dataset check asks first, so a run stops before any sample.
    with pytest.raises(ConfigError, match="'later' is reserved but not available"):
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
    sam3 = Settings.model_validate({"models": {"backend": "sam3", "sam3": "my/sam3"}})
    assert model_sources(sam3, None) == {"sam3": "my/sam3"}
    with pytest.raises(ModelLoadError, match="lacks the subdirectory sam3"):
        model_sources(sam3, tmp_path)
    (tmp_path / "sam3").mkdir()
    assert model_sources(sam3, tmp_path) == {"sam3": str(tmp_path / "sam3")}


def test_the_registry_loads_no_torch() -> None:
    """Config checks (the dataset check, predict's taxonomy) import the registry; they must not
    pay for torch, which a run that stops at a config problem never needs."""
    code = "import sys, prelabel.backends; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_cli_start_up_checks_load_neither_torch_nor_the_hub() -> None:
    """The CLI's check before a run reads the same rules as the loader (``backends.layout``)
    without importing what the loader needs: a usage mistake is reported in a second."""
    code = (
        "import sys, prelabel.cli._preflight; "
        "print('torch' in sys.modules, 'huggingface_hub' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


@pytest.mark.parametrize(
    ("source", "local"),
    [
        ("IDEA-Research/grounding-dino-tiny", False),
        ("gpt2", False),
        ("./models/sam", True),
        ("/abs/sam", True),
        ("~/sam", True),
        ("a/b/c", True),
        ("with space/x", True),
    ],
)
def test_a_model_source_is_a_folder_or_a_hub_id_by_one_rule(
    source: str, local: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prelabel.backends.layout import local_path

    monkeypatch.chdir(tmp_path)
    assert (local_path(source) is not None) is local
    # A relative ``org/name`` that exists on disk is that folder, not the hub id.
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert local_path("org/name") == Path("org/name")


@pytest.mark.parametrize(
    ("hf_hub", "transformers", "offline"),
    [("1", "", True), ("", "yes", True), ("0", "ON", True), ("0", "", False), ("", "", False)],
)
def test_either_variable_switches_the_hub_off_for_loader_and_cli_alike(
    hf_hub: str, transformers: str, offline: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    from prelabel.backends.layout import offline_env
    from prelabel.backends.loading import offline_mode

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", hf_hub)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", transformers)
    assert offline_env() is offline
    assert offline_mode() is offline


class _Session:
    """A stand-in back-end's view of one image: a thing on the left half, stuff everywhere it
    is told no thing is."""

    def __init__(self, image: object, calls: list[str]) -> None:
        self.size = image.size  # type: ignore[attr-defined]
        self.calls = calls

    def things(self) -> list[object]:
        from prelabel.panoptic import MaskCandidate

        self.calls.append("things")
        width, height = self.size
        mask = np.zeros((height, width), dtype=bool)
        mask[:, : width // 2] = True
        return [MaskCandidate(mask=mask, category_id=1, score=0.9, is_thing=True)]

    def stuff(self, things: list[object]) -> list[object]:
        from prelabel.panoptic import MaskCandidate

        self.calls.append("stuff")
        free = ~np.logical_or.reduce([t.full_mask() for t in things])  # type: ignore[attr-defined]
        return [MaskCandidate(mask=free, category_id=2, score=0.5, is_thing=False)]


class _StandInBackend:
    """Deterministic masks of known shape, through the Backend protocol: what a test injects
    instead of loading models."""

    spec = backend_spec("grounded_sam")
    is_tiny = False

    def __init__(self) -> None:
        import torch

        self.device = torch.device("cpu")
        self.opened: list[list[tuple[int, int]]] = []
        self.calls: list[str] = []

    def text_limits(self) -> tuple[()]:
        return ()

    def open_batch(self, images: list, taxonomy: object, settings: object, clock: object) -> list:
        self.opened.append([image.size for image in images])
        return [_Session(image, self.calls) for image in images]


def test_the_pipeline_turns_any_backends_candidates_into_a_panoptic_map() -> None:
    from PIL import Image

    from prelabel.pipeline.pipeline import Pipeline

    backend = _StandInBackend()
    settings = PipelineSettings(max_image_side=64, min_area=0)
    pipeline = Pipeline(backend, settings)  # type: ignore[arg-type]
    taxonomy = build_taxonomy(CATS, {}, settings, reader=reader("grounded_sam"))
    images = [Image.new("RGB", (128, 64)), Image.new("RGB", (40, 30))]
    predictions = pipeline.predict_batch(images, taxonomy)

    assert backend.opened == [[(64, 32), (40, 30)]]  # one batch, working sizes
    assert backend.calls == ["things", "stuff", "things", "stuff"]
    for image, prediction in zip(images, predictions, strict=True):
        assert prediction.size == image.size
        width = image.size[0]
        categories = {s.id: s.category_id for s in prediction.segments}
        assert {categories[int(i)] for i in np.unique(prediction.id_map[:, : width // 2])} == {1}
        assert {categories[int(i)] for i in np.unique(prediction.id_map[:, width // 2 :])} == {2}
