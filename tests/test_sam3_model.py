"""The SAM 3 back-end's model code on the tiny random SAM 3: loading, costs, known answers.

The known answer comes from transformers itself: one full ``Sam3Model`` forward per phrase
from ``pixel_values`` and ``input_ids``, transformers' own post-processing
(tests/fixtures/sam3_reference.py), then the grounded pipeline's duplicate rules and the
seed's stuff argmax written again in numpy. Random weights make the answer meaningless as a
label and exact as arithmetic. No test here passes on an empty prediction.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from prelabel.backends.sam3.candidates import StuffQuery, ThingQuery, phrase_table
from prelabel.backends.sam3.loading import Sam3Models, load_sam3
from prelabel.backends.sam3.predictor import Sam3Predictor
from prelabel.backends.sam3.session import open_sessions
from prelabel.backends.sam3.tiny import write_tiny_sam3
from prelabel.errors import ModelLoadError, NonFiniteOutputError
from prelabel.panoptic import MaskCandidate
from prelabel.pipeline.boxes import Detections, suppress_duplicates
from prelabel.pipeline.merge import merge_panoptic
from tests.fixtures.sam3_reference import reference_instances, reference_pixels, reference_semantic

pytestmark = pytest.mark.slow

CPU = torch.device("cpu")
RULES = {"nms_iou": 0.9, "cross_category_iou": 0.95, "max_detections": 8}
THINGS = [
    ThingQuery(1, ("car", "auto"), 0.27),
    ThingQuery(2, ("person",), 0.26),
    ThingQuery(3, ("dog",), 0.99),  # above every score the tiny model gives: no instance
]
STUFF = [StuffQuery(10, ("road",)), StuffQuery(11, ("sky", "grass"))]
BACKGROUND = 0.45


@pytest.fixture(scope="module")
def sam3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_sam3(tmp_path_factory.mktemp("sam3"), seed=0)


@pytest.fixture(scope="module")
def sam3(sam3_dir: Path) -> Sam3Models:
    return load_sam3(sam3_dir, device=CPU, dtype=torch.float32)


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(7)
    images = []
    for width, height in [(90, 60), (50, 70)]:
        array = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        array[height // 3 :, : width // 2] = (200, 30, 30)
        images.append(Image.fromarray(array))
    return images


def test_tiny_folder_is_laid_out_like_the_checkpoint(sam3_dir: Path, sam3: Sam3Models) -> None:
    names = {p.name for p in sam3_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= names
    assert sum(p.stat().st_size for p in sam3_dir.iterdir()) < 5_000_000
    processor = json.loads((sam3_dir / "processor_config.json").read_text())["image_processor"]
    assert processor["size"] == {"height": sam3.image_size, "width": sam3.image_size}
    assert processor["image_mean"] == [0.5] * 3 and processor["image_std"] == [0.5] * 3
    assert json.loads((sam3_dir / "config.json").read_text())["model_type"] == "sam3"
    assert sam3.is_tiny and not sam3.model.training
    assert (sam3.image_size, sam3.mask_size, sam3.text_length) == (112, (32, 32), 32)


def test_missing_and_wrong_weights_name_the_model_and_the_folder(
    tmp_path: Path, sam3_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ModelLoadError, match="cannot load SAM 3") as missing:
        load_sam3(tmp_path / "nowhere", device=CPU, dtype=torch.float32)
    assert str(tmp_path / "nowhere") in str(missing.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="gated") as hub:
        load_sam3("facebook/sam3", device=CPU, dtype=torch.float32)
    assert "'facebook/sam3'" in str(hub.value) and "offline" in str(hub.value)

    from transformers import CLIPTextConfig

    other = tmp_path / "other"
    CLIPTextConfig().save_pretrained(other)
    with pytest.raises(ModelLoadError, match="not SAM 3"):
        load_sam3(other, device=CPU, dtype=torch.float32)

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    broken.mkdir()
    for path in sam3_dir.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    weights = load_file(broken / "model.safetensors")
    weights.pop(sorted(weights)[0])
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="incomplete"):
        load_sam3(broken, device=CPU, dtype=torch.float32)


def test_nan_outputs_are_the_named_error(sam3_dir: Path) -> None:
    damaged = load_sam3(sam3_dir, device=CPU, dtype=torch.float32)
    with torch.no_grad():
        damaged.model.mask_decoder.semantic_projection.weight.fill_(float("nan"))
    predictor = Sam3Predictor(damaged)
    (session,) = open_sessions(predictor, _images()[:1])
    with pytest.raises(NonFiniteOutputError, match=r"SAM 3 \(float32\).*semantic_seg"):
        session.stuff(STUFF, [], background_threshold=BACKGROUND)


def test_vision_once_per_image_and_text_once_per_run(sam3: Sam3Models) -> None:
    predictor = Sam3Predictor(sam3, prompt_batch=2)
    images = [*_images(), _images()[0]]
    sessions = open_sessions(predictor, images)
    phrases = len(phrase_table(THINGS)[0]) + len(phrase_table(STUFF)[0])
    found = 0
    for session in sessions:
        things = session.things(THINGS, **RULES)
        stuff = session.stuff(STUFF, [c.mask for c in things], background_threshold=BACKGROUND)
        found += len(things) + len(stuff)
        assert predictor.encoder_passes == len(images)
        assert predictor.text_passes == phrases  # the first image encoded them; then cached
    assert found > 0
    # 4 thing phrases and 3 stuff phrases in batches of 2, per image.
    assert predictor.detector_calls == len(images) * (2 + 2)
    predictor.close()
    # A run can also encode the taxonomy's text up front, K phrases per call.
    ahead = Sam3Predictor(sam3, prompt_batch=2)
    ahead.prepare_text([*phrase_table(THINGS)[0], *phrase_table(STUFF)[0], "car"])
    assert ahead.text_passes == phrases and ahead.encoder_passes == 0
    (session,) = open_sessions(ahead, images[:1])
    assert session.things(THINGS, **RULES) and ahead.text_passes == phrases
    ahead.close()


def test_133_phrases_in_batches_of_k_keep_memory_flat(sam3: Sam3Models) -> None:
    rows: list[int] = []
    hook = sam3.model.detr_encoder.register_forward_hook(
        lambda module, args, kwargs, out: rows.append(kwargs["text_features"].shape[0]),
        with_kwargs=True,
    )
    try:
        predictor = Sam3Predictor(sam3, prompt_batch=4)
        (session,) = open_sessions(predictor, _images()[:1])
        things = [ThingQuery(i, (f"thing {i}",), 0.0) for i in range(1, 134)]
        candidates = session.things(
            things, nms_iou=1.0, cross_category_iou=1.0, max_detections=10_000
        )
        stuff = session.stuff(
            [StuffQuery(i, (f"stuff {i}",)) for i in range(200, 333)], [], background_threshold=0.0
        )
    finally:
        hook.remove()
    assert max(rows) == 4 and len(rows) == 2 * math.ceil(133 / 4)
    assert predictor.encoder_passes == 1 and predictor.text_passes == 266
    assert {c.category_id for c in candidates} == set(range(1, 134))  # threshold 0 keeps all
    assert len(stuff) > 0 and sum(c.mask.sum() for c in stuff) == 60 * 90  # background 0


def test_bf16_runs_end_to_end(sam3_dir: Path) -> None:
    half = load_sam3(sam3_dir, device=CPU, dtype=torch.bfloat16)
    assert next(half.model.parameters()).dtype == torch.bfloat16
    (session,) = open_sessions(Sam3Predictor(half), _images()[:1])
    things = session.things([ThingQuery(1, ("car",), 0.0)], **RULES)
    stuff = session.stuff(STUFF, [], background_threshold=0.0)
    assert things and stuff and things[0].mask.dtype == np.bool_


def _reference_candidates(sam3: Sam3Models, image: Image.Image) -> tuple[list[MaskCandidate], Any]:
    """Thing and stuff candidates from transformers' forward + post-processing, and the pixels
    whose answer float rounding may decide (mask probability within 1e-5 of 0.5, or stuff
    winners within 1e-5)."""
    size = (image.height, image.width)
    pixels = reference_pixels(image, sam3.image_size)
    phrases, owners = phrase_table(THINGS)
    thresholds = [THINGS[o].score_threshold for o in owners]
    found = reference_instances(sam3.model, sam3.tokenizer, pixels, phrases, thresholds, size)
    undecided = np.zeros(size, bool)
    boxes, scores, cats, masks = [], [], [], []
    for result, owner in zip(found, owners, strict=True):
        for i in range(len(result["scores"])):
            boxes.append(result["boxes"][i])
            scores.append(result["scores"][i])
            cats.append(THINGS[owner].category_id)
            masks.append(result["masks"][i].astype(bool))
            assert abs(result["scores"][i] - THINGS[owner].score_threshold) > 1e-5
            undecided |= np.abs(result["probabilities"][i] - 0.5) < 1e-5
    detections = Detections(
        np.array(boxes, np.float32), np.array(scores, np.float32), np.array(cats)
    )
    kept = suppress_duplicates(detections, **RULES)
    things = []
    for box, score, cat in zip(kept.boxes, kept.scores, kept.category_ids, strict=True):
        (index,) = np.flatnonzero(
            (detections.boxes == box).all(axis=1) & (detections.scores == score)
        )
        things.append(MaskCandidate(masks[index], int(cat), float(score), True))
    stuff_phrases, stuff_owners = phrase_table(STUFF)
    maps = reference_semantic(sam3.model, sam3.tokenizer, pixels, stuff_phrases, size)
    per_category = [maps[np.array(stuff_owners) == slot].max(axis=0) for slot in range(len(STUFF))]
    stacked = np.stack([np.full(size, BACKGROUND, np.float32), *per_category])
    labels = stacked.argmax(axis=0)
    top2 = np.sort(stacked, axis=0)[-2:]
    undecided |= (top2[1] - top2[0]) < 1e-5
    if things:
        labels[np.logical_or.reduce([c.mask for c in things])] = 0
    best = stacked.max(axis=0)
    stuff = [
        MaskCandidate(
            labels == slot + 1, q.category_id, float(best[labels == slot + 1].mean()), False
        )
        for slot, q in enumerate(STUFF)
        if (labels == slot + 1).any()
    ]
    return things + stuff, undecided


@pytest.mark.parametrize("prompt_batch", [1, 3])
def test_every_pixel_matches_transformers(sam3: Sam3Models, prompt_batch: int) -> None:
    predictor = Sam3Predictor(sam3, prompt_batch=prompt_batch)
    images = _images()
    sessions = open_sessions(predictor, images)
    for image, session in zip(images, sessions, strict=True):
        things = session.things(THINGS, **RULES)
        ours = things + session.stuff(
            STUFF, [c.mask for c in things], background_threshold=BACKGROUND
        )
        expected, undecided = _reference_candidates(sam3, image)
        ours_map = merge_panoptic(ours, min_area=0, output_size=image.size)
        ref_map = merge_panoptic(expected, min_area=0, output_size=image.size)
        kinds = [(s.category_id, s.is_thing) for s in ref_map.segments]
        assert {True, False} <= {t for _, t in kinds}, "the reference must hold things and stuff"
        assert 3 not in {c for c, _ in kinds} and len([k for k in kinds if k[1]]) >= 2
        assert [(s.category_id, s.is_thing) for s in ours_map.segments] == kinds
        assert [s.score for s in ours_map.segments] == pytest.approx(
            [s.score for s in ref_map.segments], abs=1e-5
        )
        assert undecided.mean() < 0.01
        decided = ~undecided
        assert np.array_equal(ours_map.id_map[decided], ref_map.id_map[decided])
        assert (ref_map.id_map[decided] > 0).any()
    predictor.close()


def test_a_video_checkpoint_layout_loads_the_same_detector(sam3_dir: Path, tmp_path: Path) -> None:
    """The released checkpoint is saved as ``sam3_video`` (detector under ``detector_config``,
    weights prefixed ``detector_model.``); it must load into the same image model."""
    from safetensors.torch import load_file, save_file
    from transformers import Sam3VideoConfig

    video = tmp_path / "video"
    video.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "processor_config.json"):
        (video / name).write_bytes((sam3_dir / name).read_bytes())
    Sam3VideoConfig(
        detector_config=json.loads((sam3_dir / "config.json").read_text())
    ).save_pretrained(video)
    weights = load_file(sam3_dir / "model.safetensors")
    save_file(
        {f"detector_model.{k}": v for k, v in weights.items()},
        video / "model.safetensors",
        metadata={"format": "pt"},
    )
    loaded = load_sam3(video, device=CPU, dtype=torch.float32)
    expected = load_sam3(sam3_dir, device=CPU, dtype=torch.float32).model.state_dict()
    got = loaded.model.state_dict()
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
    assert loaded.image_size == 112 and not loaded.is_tiny  # no marker in this folder
