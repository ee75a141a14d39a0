"""The ``sam3`` back-end behind the seam: loaded by ``load_backend``, run by the generic
pipeline, the sequence driver and ``prelabel predict``, on the tiny random SAM 3.

What SAM 3 finds on random weights is meaningless; what is pinned is the contract: one vision
pass per image whatever the taxonomy, text once per run, things only on keyframes (SAM 2
carries them between), stuff on every frame, and outputs that are never empty.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from click.testing import CliRunner
from PIL import Image

from prelabel.backends import load_backend, option_reader
from prelabel.backends.sam3.backend import Sam3Backend
from prelabel.cli import main
from prelabel.config import ModelSettings, SequenceSettings, Settings
from prelabel.emulator.sequences import moving_shapes
from prelabel.formats.bitmap import decode_bitmap
from prelabel.pipeline.pipeline import Pipeline
from prelabel.pipeline.sequence import SequencePipeline
from prelabel.pipeline.tracks import TrackedObject, Tracker
from prelabel.taxonomy import Taxonomy, build_taxonomy, categories_from_task_attributes
from tests.connector_helpers import SAM3_PIPELINE, write_config
from tests.fixtures.emulator import DEMO_CATEGORIES, png_bytes
from tests.fixtures.models import category_map

SAM3 = Settings(models=ModelSettings(backend="sam3", device="cpu"), pipeline=SAM3_PIPELINE)


def taxonomy() -> Taxonomy:
    categories = categories_from_task_attributes({"categories": list(DEMO_CATEGORIES)})
    return build_taxonomy(categories, {}, SAM3_PIPELINE, reader=option_reader(SAM3))


def backend_of(pipeline: Pipeline) -> Sam3Backend:
    assert isinstance(pipeline.backend, Sam3Backend)
    return pipeline.backend


def test_load_backend_gives_sam3_on_the_cpu_in_float32_from_models_dir(
    tiny_models_dir: Path,
) -> None:
    backend = load_backend(SAM3, tiny_models_dir)
    assert isinstance(backend, Sam3Backend)
    assert backend.spec.name == "sam3" and backend.is_tiny
    assert backend.device.type == "cpu" and backend.models.dtype.is_floating_point
    assert str(backend.models.dtype) == "torch.float32"  # dtype auto off CUDA
    assert backend.predictor.prompt_batch == SAM3.models.sam3_prompt_batch == 8


def test_the_encoder_runs_once_per_image_and_text_once_per_run(
    tiny_sam3_pipeline: Pipeline,
) -> None:
    backend = backend_of(tiny_sam3_pipeline)
    images = [_image(seed) for seed in (1, 2, 3)]
    encoder, text = backend.encoder_passes, backend.predictor.text_passes
    tax = taxonomy()
    timings: dict[str, float] = {}

    batch = tiny_sam3_pipeline.predict_batch(images[:2], tax, timings=timings)
    single = tiny_sam3_pipeline.predict(images[2], tax)
    assert backend.encoder_passes - encoder == 3
    phrases = {p for prompt in tax.prompts for p in prompt.phrases}
    assert backend.predictor.text_passes - text <= len(phrases)  # 0 when cached earlier
    for prediction in [*batch, single]:
        assert category_map(prediction).any()
        assert {s.is_thing for s in prediction.segments} == {True, False}
    assert set(timings) == {"embed", "text", "things", "stuff", "merge"}


class _Recording:
    """The real (tiny) SAM 2 tracker, with the calls the sequence driver makes written down."""

    def __init__(self, inner: Tracker) -> None:
        self.inner = inner
        self.calls: list[tuple[str, int]] = []
        self.frame = -1

    def advance(self, image: Image.Image) -> dict[int, TrackedObject]:
        self.frame += 1
        self.calls.append(("advance", self.frame))
        return self.inner.advance(image)

    def add_objects(self, masks: dict[int, npt.NDArray[np.bool_]]) -> dict[int, TrackedObject]:
        assert masks and all(m.any() for m in masks.values()), "SAM 3 gave SAM 2 empty masks"
        self.calls.append(("add", self.frame))
        return self.inner.add_objects(masks)

    def remove_objects(self, ids: Iterable[int]) -> None:
        self.inner.remove_objects(ids)


def test_a_sequence_takes_things_from_sam3_on_keyframes_and_sam2_between(
    tiny_sam3_pipeline: Pipeline, tiny_models_dir: Path
) -> None:
    settings = SAM3.model_copy(update={"sequence": SequenceSettings(keyframe_interval=2)})
    driver = SequencePipeline(tiny_sam3_pipeline, settings, tiny_models_dir)
    backend = backend_of(tiny_sam3_pipeline)
    frames = [scene.image for scene in moving_shapes(3, sizes=[(64, 48)] * 3, seed=1)]
    tracker = _Recording(driver.new_tracker())  # SAM 2 from DIR/sam2_video
    encoder, detector = backend.encoder_passes, backend.predictor.detector_calls

    results = list(driver.predict_frames(frames, taxonomy(), tracker=tracker))

    assert [r.is_keyframe for r in results] == [True, False, True]
    assert backend.encoder_passes - encoder == 3  # one vision pass per frame
    # Per keyframe one detector call for the two thing phrases and one for the two stuff
    # phrases (K = 8); between keyframes only stuff.
    assert backend.predictor.detector_calls - detector == 2 + 1 + 2
    # SAM 2 follows every frame and gets SAM 3's things on keyframes only.
    assert [c for c in tracker.calls if c[0] == "add"] == [("add", 0), ("add", 2)]
    assert [c for c in tracker.calls if c[0] == "advance"] == [("advance", i) for i in range(3)]
    assert {t.category_id for t in driver.tracks if t.is_thing} <= {1, 2}
    for result in results:
        assert category_map(result.prediction).any()


def test_predict_labels_image_files_with_the_sam3_backend(
    tmp_path: Path, tiny_models_dir: Path
) -> None:
    (tmp_path / "photos").mkdir()
    for seed in (1, 2):
        (tmp_path / "photos" / f"p{seed}.png").write_bytes(png_bytes(48, 32, seed=seed))
    categories = tmp_path / "categories.yaml"
    categories.write_text(json.dumps({"categories": list(DEMO_CATEGORIES)}), encoding="utf-8")
    config = write_config(tmp_path / "config.yaml", pipeline=SAM3_PIPELINE, backend="sam3")
    out = tmp_path / "out"

    result = CliRunner().invoke(
        main,
        [
            "predict",
            str(tmp_path / "photos"),
            "--categories",
            str(categories),
            "--out",
            str(out),
            "--models",
            str(tiny_models_dir),
            "--config",
            str(config),
        ],
    )

    assert result.exit_code == 0, result.output
    assert "2 of 2 images pre-labeled" in result.stderr
    for name in ("p1", "p2"):
        id_map = decode_bitmap((out / "bitmaps" / f"{name}.png").read_bytes(), (48, 32))
        label = json.loads((out / "labels" / f"{name}.json").read_text())
        assert label["annotations"], name
        assert {int(i) for i in np.unique(id_map)} - {0} == {a["id"] for a in label["annotations"]}


def _image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    array[10:30, 8:30] = (200, 30, 30)
    return Image.fromarray(array)


@pytest.mark.parametrize("option", ["box_threshold", "text_threshold", "mask_threshold"])
def test_a_grounded_sam_option_under_sam3_is_an_error_naming_the_backend(option: str) -> None:
    from prelabel.config import CategoryOptions
    from prelabel.errors import TaxonomyError

    categories = categories_from_task_attributes({"categories": list(DEMO_CATEGORIES)})
    with pytest.raises(TaxonomyError, match=rf"{option} is not an option of the sam3 back-end"):
        build_taxonomy(
            categories,
            {"person": CategoryOptions(**{option: 0.4})},
            SAM3_PIPELINE,
            reader=option_reader(SAM3),
        )


@pytest.mark.parametrize("backend", ["grounded_sam", "sam3"])
def test_the_stage_benchmark_runs_each_backend_on_tiny_models(
    backend: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``benchmarks/pipeline_stages.py --tiny``: the script the README's cost figures come from
    still runs, times every stage of the back-end and sees one encoder pass per image."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "pipeline_stages.py"
    spec = importlib.util.spec_from_file_location("pipeline_stages", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "pipeline_stages", module)  # its dataclass looks it up
    spec.loader.exec_module(module)
    argv = ["--backend", backend, "--tiny", "--images", "1", "--categories", "3"]
    code = module.main([*argv, "--size", "96x64", "--merge-runs", "1", "--device", "cpu"])

    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (result,) = summary["by_categories"]
    assert summary["backend"] == backend and result["categories"] == 3
    assert result["encoder_passes_per_image"] == 1 and result["segments_per_image"] > 0
    assert set(module.BACKEND_STAGES[backend]) <= set(result["stage_s"])
