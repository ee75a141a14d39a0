"""SAM 3's pre- and post-processing and candidate rules, on literal inputs (no model).

Post-processing is pinned twice: against transformers' own ``Sam3ImageProcessor`` methods
(their source run unchanged, see tests/fixtures/sam3_reference.py) and against the formulas in
numpy. Preprocessing is pinned against the published recipe on images whose answer is known.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from prelabel.backends.sam3.candidates import (
    StuffQuery,
    ThingQuery,
    phrase_table,
    stuff_candidates,
    thing_candidates,
)
from prelabel.backends.sam3.predictor import Instances
from prelabel.backends.sam3.processing import pixel_values, select_instances, semantic_probabilities
from tests.fixtures.sam3_reference import numpy_bilinear, transformers_post_processing


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x.astype(np.float64)))


def test_pixel_values_follow_the_recipe_and_squash_without_padding() -> None:
    # Left half red, right half blue, 80 wide and 40 high: squashed to a square, the left half
    # of every row stays red (no padding, no aspect ratio kept, x and y not swapped).
    array = np.zeros((40, 80, 3), np.uint8)
    array[:, :40] = (255, 0, 0)
    array[:, 40:] = (0, 0, 255)
    pixels = pixel_values([Image.fromarray(array)], 16)
    assert pixels.shape == (1, 3, 16, 16) and pixels.dtype == torch.float32
    # (255 / 255 - 0.5) / 0.5 = 1 and (0 - 0.5) / 0.5 = -1, exactly, away from the seam.
    assert torch.equal(pixels[0, 0, :, :7], torch.ones(16, 7))
    assert torch.equal(pixels[0, 0, :, 9:], -torch.ones(16, 7))
    assert torch.equal(pixels[0, 2, :, 9:], torch.ones(16, 7))
    grey = pixel_values([Image.new("RGB", (5, 9), (51, 102, 204))], 4)
    expected = (np.array([51, 102, 204], np.float32) / np.float32(255) - 0.5) / 0.5
    assert np.allclose(grey[0].numpy(), expected[:, None, None], atol=1e-7)
    with pytest.raises(ValueError, match="RGB"):
        pixel_values([Image.new("L", (4, 4))], 4)


def _outputs(seed: int, queries: int = 6, side: int = 8) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    corners = np.sort(rng.random((1, queries, 2, 2)), axis=2)  # x0 < x1, y0 < y1
    boxes = np.stack(
        [corners[..., 0, 0], corners[..., 0, 1], corners[..., 1, 0], corners[..., 1, 1]], -1
    )
    return SimpleNamespace(
        pred_logits=torch.tensor(rng.normal(0, 2, (1, queries)), dtype=torch.float32),
        presence_logits=torch.tensor([[0.7]], dtype=torch.float32),
        pred_boxes=torch.tensor(boxes, dtype=torch.float32),
        pred_masks=torch.tensor(rng.normal(0, 3, (1, queries, side, side)), dtype=torch.float32),
        semantic_seg=torch.tensor(rng.normal(0, 3, (1, 1, side, side)), dtype=torch.float32),
    )


@pytest.mark.parametrize("size", [(30, 45), (5, 4)])
def test_instances_match_transformers_post_processing(size: tuple[int, int]) -> None:
    out = _outputs(seed=1)
    threshold = 0.3
    post = transformers_post_processing()["post_process_instance_segmentation"]
    (expected,) = post(None, out, threshold=threshold, target_sizes=[size])
    ours = select_instances(
        out.pred_logits[0],
        out.presence_logits[0],
        out.pred_boxes[0],
        out.pred_masks[0],
        threshold=threshold,
        size=size,
    )
    assert 0 < len(expected["scores"]) < out.pred_logits.shape[1]  # the gate drops some
    assert torch.equal(ours.scores, expected["scores"])
    assert torch.equal(ours.boxes, expected["boxes"])
    assert torch.equal(ours.masks, expected["masks"].bool())
    assert ours.masks.any() and not ours.masks.all()


def test_instances_match_the_formulas() -> None:
    out = _outputs(seed=2)
    size, threshold = (24, 20), 0.25
    ours = select_instances(
        out.pred_logits[0],
        out.presence_logits[0],
        out.pred_boxes[0],
        out.pred_masks[0],
        threshold=threshold,
        size=size,
    )
    scores = _sigmoid(out.pred_logits[0].numpy()) * _sigmoid(out.presence_logits[0].numpy())
    keep = scores > threshold
    probabilities = numpy_bilinear(_sigmoid(out.pred_masks[0].numpy())[keep], size)
    decided = np.abs(probabilities - 0.5) > 1e-6  # float32 vs float64 may split exact ties
    assert keep.sum() >= 2
    assert np.allclose(ours.scores.numpy(), scores[keep], atol=1e-6)
    boxes = out.pred_boxes[0].numpy()[keep] * np.array([20, 24, 20, 24])
    assert np.allclose(ours.boxes.numpy(), boxes, atol=1e-5)
    assert np.array_equal(ours.masks.numpy()[decided], (probabilities > 0.5)[decided])
    # Strictly above the threshold: a score equal to it is dropped.
    at = select_instances(
        torch.zeros(1),
        torch.tensor([100.0]),
        torch.zeros(1, 4),
        torch.zeros(1, 2, 2),
        threshold=0.5,
        size=(2, 2),
    )
    assert len(at.scores) == 0 and at.masks.shape == (0, 2, 2)


def test_semantic_probabilities_match_transformers_and_the_formula() -> None:
    out = _outputs(seed=3)
    size = (21, 34)
    post = transformers_post_processing()["post_process_semantic_segmentation"]
    (expected,) = post(None, out, target_sizes=[size], return_segmentation_scores=True)
    ours = semantic_probabilities(out.semantic_seg[:, 0], size)
    assert ours.shape == (1, *size)
    assert torch.equal(ours[0], expected.segmentation_scores[0])
    formula = numpy_bilinear(_sigmoid(out.semantic_seg[0, 0].numpy()), size)
    assert np.allclose(ours[0].numpy(), formula, atol=1e-6)


def _box_mask(box: tuple[int, int, int, int], shape: tuple[int, int] = (10, 10)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[box[1] : box[3], box[0] : box[2]] = True
    return mask


def _instances(*items: tuple[tuple[int, int, int, int], float]) -> Instances:
    return Instances(
        masks=np.stack([_box_mask(b) for b, _ in items]) if items else np.zeros((0, 10, 10), bool),
        boxes=np.array([b for b, _ in items], np.float32).reshape(-1, 4),
        scores=np.array([s for _, s in items], np.float32),
    )


def test_things_merge_synonyms_and_apply_the_nms_rules() -> None:
    queries = [ThingQuery(1, ("car", "auto"), 0.3), ThingQuery(2, ("truck",), 0.3)]
    assert phrase_table(queries) == (["car", "auto", "truck"], [0, 0, 1])
    found = [
        _instances(((0, 0, 4, 4), 0.9), ((6, 6, 10, 10), 0.5)),
        _instances(((0, 0, 4, 4), 0.8)),  # the same car through its synonym: suppressed
        _instances(((0, 0, 4, 5), 0.6), ((5, 0, 9, 3), 0.7)),  # a truck on the car: suppressed
    ]
    rules = {"nms_iou": 0.5, "cross_category_iou": 0.7, "max_detections": 10}
    got = thing_candidates(found, queries, **rules)
    assert [(c.category_id, round(c.score, 2)) for c in got] == [(1, 0.9), (2, 0.7), (1, 0.5)]
    assert all(c.is_thing for c in got)
    assert np.array_equal(got[1].mask, _box_mask((5, 0, 9, 3)))
    assert len(thing_candidates(found, queries, **{**rules, "max_detections": 2})) == 2
    with pytest.raises(ValueError, match="phrase results"):
        thing_candidates(found[:2], queries, **rules)


def test_stuff_argmax_with_background_ties_phrase_maximum_and_things_removed() -> None:
    size = (4, 6)
    logit = lambda p: float(np.log(p / (1 - p)))  # noqa: E731
    # Maps at the working size already (bilinear to the same size is the identity).
    sky_a = np.full(size, logit(0.2))
    sky_b = np.full(size, logit(0.2))
    sky_b[:2] = logit(0.9)  # the sky's second phrase wins the top rows
    road = np.full(size, logit(0.2))
    road[2:] = logit(0.8)
    road[3, 5] = 0.0  # sigmoid(0) = 0.5, exactly the background threshold: background wins
    logits = torch.tensor(np.stack([sky_a, sky_b, road]), dtype=torch.float32)
    queries = [StuffQuery(7, ("sky", "heaven")), StuffQuery(8, ("road",))]
    things = np.zeros(size, bool)
    things[0, 0] = True
    got = stuff_candidates(logits, queries, size=size, things=things, background_threshold=0.5)
    assert [c.category_id for c in got] == [7, 8]
    sky = np.zeros(size, bool)
    sky[:2] = True
    sky[0, 0] = False
    road_mask = np.zeros(size, bool)
    road_mask[2:] = True
    road_mask[3, 5] = False
    assert np.array_equal(got[0].mask, sky) and np.array_equal(got[1].mask, road_mask)
    assert got[0].score == pytest.approx(0.9) and got[1].score == pytest.approx(0.8)
    assert not any(c.is_thing for c in got)
