"""The SAM 2 video tracker and the sequence predictor on tiny random-weight models.

The tiny SAM 2 video model is written by ``write_tiny_models`` (the tiny_models_dir fixture)
and loaded through the real loading path. Random weights make masks meaningless, so these
tests pin contracts: pruning changes no mask bit, state stays bounded, ids and sizes hold.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prelabel.backends.grounded_sam.backend import GroundedSam
from prelabel.backends.sam2_video.loading import LoadedTracker, load_sam2_video
from prelabel.backends.sam2_video.tiny import tiny_sam2_video_config
from prelabel.backends.sam2_video.tracker import Sam2Tracker, look_back
from prelabel.config import ModelSettings, PipelineSettings, Settings
from prelabel.errors import ModelLoadError
from prelabel.pipeline.pipeline import Pipeline
from prelabel.pipeline.sequence import SequencePipeline
from prelabel.taxonomy import Category, build_taxonomy

pytestmark = pytest.mark.slow


def frames(count: int, size: tuple[int, int] = (48, 32)) -> list[Image.Image]:
    """A bright square moving right over noise."""
    rng = np.random.default_rng(0)
    out = []
    for k in range(count):
        array = rng.integers(0, 60, (size[1], size[0], 3), dtype=np.uint8)
        array[8:20, 4 + 2 * k : 16 + 2 * k] = 250
        out.append(Image.fromarray(array))
    return out


@pytest.fixture(scope="module")
def tracker_model(tiny_models_dir: Path) -> LoadedTracker:
    return load_sam2_video(ModelSettings(device="cpu"), tiny_models_dir)


def test_the_tiny_model_loads_through_the_real_path(tracker_model: LoadedTracker) -> None:
    assert tracker_model.is_tiny
    assert tracker_model.model.config.model_type == "sam2_video"
    assert not tracker_model.model.training


def test_missing_weights_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="sam2_video"):
        load_sam2_video(ModelSettings(device="cpu"), tmp_path)
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelLoadError, match="cannot load SAM 2 video"):
        load_sam2_video(ModelSettings(device="cpu", sam2_video=str(missing)))


def _track(model: torch.nn.Module, prune: bool, count: int) -> tuple[list, Sam2Tracker]:
    tracker = Sam2Tracker(model, prune=prune)
    images = frames(count)
    results = [tracker.advance(images[0])]
    first = np.zeros((32, 48), dtype=bool)
    first[8:20, 4:16] = True
    results.append(tracker.add_objects({7: first}))
    sizes = []
    for k, image in enumerate(images[1:], start=1):
        results.append(tracker.advance(image))
        if k == 2:
            second = np.zeros((32, 48), dtype=bool)
            second[22:30, 30:44] = True
            results.append(tracker.add_objects({9: second}))
        if k == 4:
            tracker.remove_objects([9])
        sizes.append(tracker.stored_frames())
    return results, tracker


def test_pruning_leaves_masks_bit_identical_and_state_bounded() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        from transformers import Sam2VideoModel

        config = tiny_sam2_video_config(num_maskmem=3, max_object_pointers_in_encoder=3)
        model = Sam2VideoModel(config).eval()
    assert look_back(model) == 2
    full, unpruned = _track(model, prune=False, count=8)
    pruned_results, pruned = _track(model, prune=True, count=8)
    assert [list(r) for r in full] == [list(r) for r in pruned_results]
    assert [] in [list(r) for r in full] and [7, 9] in [list(r) for r in full]
    for a, b in zip(full, pruned_results, strict=True):
        for obj_id in a:
            assert np.array_equal(a[obj_id].mask, b[obj_id].mask)
            assert a[obj_id].present == b[obj_id].present
            assert a[obj_id].score == b[obj_id].score
    assert any(r[7].mask.any() for r in full[1:])
    assert unpruned.stored_frames() == 8
    assert pruned.stored_frames() <= look_back(model) + 1
    session = pruned.session
    assert session.obj_ids == [7]
    for outputs in session.output_dict_per_obj.values():
        for out in [
            *outputs["cond_frame_outputs"].values(),
            *outputs["non_cond_frame_outputs"].values(),
        ]:
            assert "high_res_masks" not in out


def test_a_sequence_yields_track_ids_frame_by_frame(
    tiny_models: object, tracker_model: LoadedTracker
) -> None:
    settings = Settings(
        pipeline=PipelineSettings(
            box_threshold=0.0, text_threshold=0.0, shrink_kernel=2, min_area=0, max_detections=3
        ),
        sequence={"keyframe_interval": 3, "match_iou": 0.5},
    )
    pipeline = Pipeline(GroundedSam(tiny_models), settings.pipeline)
    sequence = SequencePipeline(pipeline, settings, tracker_model=tracker_model)
    taxonomy = build_taxonomy(
        [Category(1, "person", True), Category(2, "car", True), Category(3, "sky", False)],
        {},
        settings.pipeline,
    )
    images = [*frames(5), frames(1, (40, 56))[0]]
    pulled = []

    def lazy() -> Iterator[Image.Image]:
        for image in images:
            pulled.append(image)
            yield image

    results = sequence.predict_frames(lazy(), taxonomy)
    first = next(results)
    assert len(pulled) == 1  # frames are consumed one at a time
    rest = list(results)
    out = [first, *rest]
    assert [r.index for r in out] == list(range(6))
    assert [r.is_keyframe for r in out] == [True, False, False, True, False, False]
    assert [r.prediction.size for r in out] == [im.size for im in images]
    table = {t.track_id: t for t in sequence.tracks}
    assert table, "no tracks"
    assert any(t.is_thing for t in table.values()) and any(not t.is_thing for t in table.values())
    for r in out:
        ids = set(np.unique(r.prediction.id_map).tolist()) - {0}
        assert ids == {s.id for s in r.prediction.segments}
        for seg in r.prediction.segments:
            assert table[seg.id].category_id == seg.category_id
            assert r.index in table[seg.id].frames
    assert sequence.is_tiny


def test_sam2_video_loads_only_when_things_are_tracked(tiny_models: object, tmp_path: Path) -> None:
    settings = Settings(
        models=ModelSettings(device="cpu", sam2_video=str(tmp_path / "absent")),
        pipeline=PipelineSettings(shrink_kernel=2, min_area=0),
    )
    sequence = SequencePipeline(Pipeline(GroundedSam(tiny_models), settings.pipeline), settings)
    stuff_only = build_taxonomy([Category(3, "sky", False)], {}, settings.pipeline)
    out = list(sequence.predict_frames(frames(2), stuff_only))
    assert [r.index for r in out] == [0, 1]
    assert all(s.id == 1 for r in out for s in r.prediction.segments)
    things = build_taxonomy([Category(1, "person", True)], {}, settings.pipeline)
    results = sequence.predict_frames(frames(2), things)
    with pytest.raises(ModelLoadError, match="SAM 2 video"):
        next(results)
