"""The seed's stuff steps on literal arrays, and two of its promises on the tiny models.

The step functions are checked against the plain operations the seed uses (stacked argmax,
``binary_erosion``, ``rng.choice``), so that the memory-saving forms in
``prelabel.backends.grounded_sam.stuff_seed`` are known to compute the same thing.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from prelabel.backends.grounded_sam import padded_points
from prelabel.backends.grounded_sam.backend import GroundedSam
from prelabel.backends.grounded_sam.fastest_path import tensor_paths
from prelabel.backends.grounded_sam.segment import SamSegmenter
from prelabel.backends.grounded_sam.stuff_seed import (
    STUFF_PROMPTS_PER_CALL,
    can_win,
    chunked_argmax,
    coarse_argmax,
    coarse_index,
    draw_region_points,
    erode_labels,
    label_counts,
    label_sums,
    region_weights,
    sample_counts,
    upscaled_probability,
)
from prelabel.config import PipelineSettings
from prelabel.pipeline.pipeline import Pipeline
from prelabel.taxonomy import Category, build_taxonomy
from tests.fixtures.images import noise_image


def test_one_map_at_a_time_matches_a_stacked_argmax_with_ties_to_background() -> None:
    maps = torch.tensor(
        [
            [[0.1, 0.6, 0.6, 0.05]],
            [[0.1, 0.6, 0.7, 0.05]],
        ]
    )
    chunks = [([slot], probability[None]) for slot, probability in enumerate(maps)]
    labels, best = chunked_argmax(chunks, (1, 4), 0.1, torch.device("cpu"))
    # pixel 0: both tie with the background -> 0; pixel 1: tie between maps -> the first
    assert labels.tolist() == [[0, 1, 2, 0]]
    assert best[0].tolist() == pytest.approx([0.1, 0.6, 0.7, 0.1])
    stacked = torch.cat([torch.full((1, 1, 4), 0.1), maps]).argmax(dim=0)
    assert torch.equal(labels.long(), stacked)
    assert labels.dtype == torch.uint8


def test_a_slot_without_a_map_never_wins() -> None:
    maps = [([1], torch.tensor([[[0.3, 0.0]]]))]  # slot 0 was skipped (no points)
    labels, _ = chunked_argmax(maps, (1, 2), 0.0, torch.device("cpu"))
    assert labels.tolist() == [[2, 0]]  # 0.0 ties the background -> background


def test_coarse_index_is_bilinear_upscaling_then_sigmoid_then_argmax() -> None:
    logits = torch.randn(3, 11, 13, generator=torch.Generator().manual_seed(0)) * 3
    size = (40, 29)
    expected_probs = F.interpolate(
        logits[:, None], size=size, mode="bilinear", align_corners=False
    )[:, 0].sigmoid()
    expected = torch.cat([torch.full((1, *size), 0.4), expected_probs]).argmax(dim=0)
    index = coarse_index(logits, size, 0.4)
    assert np.array_equal(index, expected.numpy())
    assert {0, 1, 2, 3} <= set(np.unique(index).tolist())
    assert torch.equal(upscaled_probability(logits[0], size), expected_probs[0])
    # sigmoid first, then upscaling, would be a different map
    sigmoid_first = F.interpolate(
        logits[:1, None].sigmoid(), size=size, mode="bilinear", align_corners=False
    )[0, 0]
    assert not torch.allclose(upscaled_probability(logits[0], size), sigmoid_first, atol=1e-4)


def test_maps_that_cannot_beat_the_background_are_skipped_with_the_same_labels() -> None:
    logits = torch.randn(4, 9, 12, generator=torch.Generator().manual_seed(2)) * 3
    logits[1] = -2.2 - torch.rand(9, 12)  # sigmoid < 0.1 everywhere
    logits[3] = math.log(0.1 / 0.9) - 1e-6  # just under the background: kept (margin)
    assert can_win(logits, 0.1) == [0, 2, 3]
    size = (23, 40)
    stacked = torch.cat([torch.full((1, *size), 0.1), upscaled_probability(logits, size)])
    labels, _ = coarse_argmax(logits, size, 0.1)
    assert torch.equal(labels.long(), stacked.argmax(dim=0))
    assert can_win(logits, 1.0) == [] and can_win(logits, 0.0) == [0, 1, 2, 3]


def test_the_coarse_winner_probability_is_the_winner_s_own_map() -> None:
    """Why one upscale per CLIPSeg map suffices: the draw's weights are read from it."""
    logits = torch.randn(11, 9, 12, generator=torch.Generator().manual_seed(4)) * 3
    size = (31, 50)
    labels, best = coarse_argmax(logits, size, 0.3)
    probs = upscaled_probability(logits, size)
    assert len(logits) > STUFF_PROMPTS_PER_CALL  # more than one chunk
    for slot in range(len(logits)):
        won = labels == slot + 1
        assert won.any()
        assert torch.equal(best[won], probs[slot][won])


@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
@pytest.mark.parametrize("kernel", [0, 1, 2, 3, 4, 5, 8, 9, 16, 17, 20])
def test_erosion_equals_scipy_binary_erosion_with_a_square(kernel: int, dtype: type) -> None:
    """Kernels around powers of two (the runs double), odd and even (scipy's window placement),
    blocks inside and on the border, speckle; labels past 255."""
    rng = np.random.default_rng(kernel)
    labels = np.zeros((70, 90), dtype=dtype)
    labels[5:60, 3:50] = 1  # a block touching nothing
    labels[0:30, 60:90] = 2  # a block on the image border (outside counts as outside)
    labels[40:70, 55:90] = rng.integers(0, 4, (30, 35))  # speckle of 1, 2 and 3
    labels[62:70, 0:40] = 300 if dtype == np.int32 else 4  # the bottom-left corner
    eroded = erode_labels(torch.from_numpy(labels), kernel).numpy()
    assert eroded.dtype == dtype
    for label in np.unique(labels[labels > 0]):
        mask = labels == label
        if kernel:
            mask = ndimage.binary_erosion(mask, structure=np.ones((kernel, kernel)))
        assert np.array_equal(eroded == label, mask), label
    assert (eroded == 1).any()


def test_relative_sizes_use_the_seed_rounding() -> None:
    assert sample_counts([300, 1000, 0, 999], 1000) == [300, 1000, 0, 999]
    assert sample_counts([1, 3], 10) == [3, 10]  # int(1 / 3 * 10) = 3
    assert sample_counts([0, 0], 1000) == [0, 0]
    assert sample_counts([5, 7], 0) == [0, 0]


@pytest.mark.parametrize("case", range(6))
def test_region_draw_equals_numpy_choice_over_the_whole_image(case: int) -> None:
    """The documented draw: ``rng.choice`` over every pixel with ``p = w / w[region].sum()``."""
    rng = np.random.default_rng(case)
    height, width = 40 + case * 7, 60 + case * 11
    probability = rng.random((height, width)).astype(np.float32) ** (1 + case)
    region = np.zeros((height, width), dtype=bool)
    region[rng.integers(0, 10) : rng.integers(20, height), 5 : rng.integers(30, width)] = True
    region &= rng.random((height, width)) > 0.15 * case  # holes, and rows of varied length
    labels = torch.from_numpy(np.where(region, 3, 1).astype(np.uint8)).flatten()
    pixels, weights = region_weights(labels, torch.from_numpy(probability).flatten(), 2)
    assert np.array_equal(pixels, np.flatnonzero(region))
    n = 500 + 300 * case
    points = draw_region_points(pixels, weights, width, n, np.random.default_rng([0, case]))

    w = (probability * region).astype(np.float64).ravel()
    p = w / w[region.ravel()].sum()
    flat = np.random.default_rng([0, case]).choice(w.size, size=n, replace=True, p=p)
    expected = np.stack([flat % width, flat // width], axis=1).astype(np.float32)
    assert np.array_equal(points, expected)
    xs, ys = points.astype(int).T
    assert region[ys, xs].all()


def test_region_weights_are_the_same_from_numpy_and_from_tensor_operations() -> None:
    """A CPU device finds a region's pixels with numpy, any other with ``torch.nonzero``."""
    rng = np.random.default_rng(5)
    eroded = torch.from_numpy(rng.integers(0, 4, 50 * 70).astype(np.uint8))
    probability = torch.from_numpy(rng.random(50 * 70).astype(np.float32))
    for slot in range(3):
        pixels, weights = region_weights(eroded, probability, slot)
        with tensor_paths():
            by_tensors = region_weights(eroded, probability, slot)
        assert pixels.dtype == by_tensors[0].dtype == np.int64 and len(pixels) > 100
        assert np.array_equal(pixels, by_tensors[0])
        assert weights.dtype == np.float64 and np.array_equal(weights, by_tensors[1])


def test_padded_point_prompts_decode_as_if_alone(tiny_models: object) -> None:
    """Point lists of different lengths in one call: each map is the one its own call gives,
    because the padding is masked out of SAM's attention (without the mask it is not)."""
    segmenter = SamSegmenter(tiny_models.sam, tiny_models.sam_processor, tiny_models.device)
    embedding = segmenter.embed(_image())
    rng = np.random.default_rng(1)
    point_sets = [rng.uniform(0, 60, (k, 2)).astype(np.float32) for k in (3, 50, 1, 17)]
    batched = segmenter.point_probabilities(embedding, point_sets)
    assert batched.shape == (4, 64, 96)
    for row, points in enumerate(point_sets):
        alone = segmenter.point_probabilities(embedding, [points])[0]
        assert torch.allclose(batched[row], alone, atol=1e-5), row
    unmasked = segmenter._decode_points(  # the same padded call, hooks not told the padding
        embedding, *_padded(point_sets)
    ).pred_masks[0, 0]
    alone_logits = segmenter._decode_points(embedding, point_sets[0][None]).pred_masks[0, 0]
    assert (unmasked.sigmoid() - alone_logits.sigmoid()).abs().max() > 1e-3


def _padded(point_sets: list[np.ndarray]) -> tuple[np.ndarray, torch.Tensor]:
    points, labels = padded_points.pad_point_sets(point_sets)
    assert labels.tolist()[0][:4] == [1, 1, 1, padded_points.PAD_LABEL]
    return points, torch.from_numpy(labels)


@pytest.fixture(scope="module")
def spied(tiny_models: object) -> tuple[Pipeline, list[list[np.ndarray]]]:
    settings = PipelineSettings(shrink_kernel=0, min_area=0, max_detections=1, box_threshold=0)
    pipeline = Pipeline(GroundedSam(tiny_models), settings)
    calls: list[list[np.ndarray]] = []
    real = pipeline.backend.segmenter.point_probabilities

    def spy(embedding: object, point_sets: list[np.ndarray]) -> torch.Tensor:
        calls.append([np.asarray(points) for points in point_sets])
        return real(embedding, point_sets)

    pipeline.backend.segmenter.point_probabilities = spy
    return pipeline, calls


def _image() -> Image.Image:
    return noise_image(96, 64, 3, high=255)


@pytest.mark.slow
def test_one_sam_call_for_the_stuff_categories_each_with_its_share_of_points(
    spied: tuple[Pipeline, list[list[np.ndarray]]],
) -> None:
    pipeline, calls = spied
    calls.clear()
    stuff = [Category(1, "sky"), Category(2, "road"), Category(3, "grass")]
    prediction = pipeline.predict(_image(), build_taxonomy(stuff, {}, pipeline.settings))
    assert prediction.segments
    (call,) = calls  # three categories, fewer than STUFF_PROMPTS_PER_CALL: one decoder call
    assert len(call) == 3
    assert max(len(points) for points in call) == 1000  # the largest category
    assert all(0 < len(points) <= 1000 for points in call)


@pytest.mark.slow
def test_stuff_points_never_land_on_things(spied: tuple[Pipeline, list[list[np.ndarray]]]) -> None:
    pipeline, calls = spied
    calls.clear()
    categories = [Category(10, "person", True), Category(1, "sky"), Category(2, "road")]
    taxonomy = build_taxonomy(categories, {}, pipeline.settings)
    prediction = pipeline.predict(_image(), taxonomy)
    things = np.isin(prediction.id_map, [s.id for s in prediction.segments if s.is_thing])
    assert 0 < things.mean() < 1
    assert calls
    for points in (points for call in calls for points in call):
        xs, ys = points.astype(int).T
        assert not things[ys, xs].any()


@pytest.mark.parametrize("tensors", [False, True], ids=["numpy", "tensor-ops"])
@pytest.mark.parametrize("slots", [[0, 1, 2, 3, 4], [1, 3, 4, 7, 9]], ids=["consecutive", "gaps"])
def test_chunks_of_maps_give_the_stacked_argmax_with_its_tie_rules(
    slots: list[int], tensors: bool
) -> None:
    """One ``torch.max`` per chunk (tensor operations), or one map at a time in numpy (a CPU
    device): ties inside a chunk and across chunks go to the lower slot, ties with the
    background to the background, as one argmax over all maps."""
    generator = torch.Generator().manual_seed(7)
    maps = (torch.randint(0, 4, (5, 6, 9), generator=generator) / 4).float()  # many ties
    maps[2, 0, :3] = maps[4, 0, :3] = 0.9  # a tie across the two chunks below
    maps[:, 1, :2] = 0.25  # every map ties the background
    size, background = (6, 9), 0.25
    chunks = [(slots[:3], maps[:3]), (slots[3:], maps[3:])]
    with tensor_paths() if tensors else contextlib.nullcontext():
        labels, best = chunked_argmax(chunks, size, background, torch.device("cpu"))
    everything = torch.zeros(max(slots) + 1, *size)  # an absent slot: a map of zeros
    everything[slots] = maps
    stacked = torch.cat([torch.full((1, *size), background), everything])
    assert torch.equal(labels.long(), stacked.argmax(dim=0))
    assert torch.equal(best, stacked.amax(dim=0))
    assert labels[0, :3].tolist() == [slots[2] + 1] * 3 and labels[1, :2].tolist() == [0, 0]
    single = [([slot], probability[None]) for slot, probability in zip(slots, maps, strict=True)]
    one_at_a_time, _ = chunked_argmax(single, size, background, torch.device("cpu"))
    assert torch.equal(one_at_a_time, labels)


@pytest.mark.parametrize("slots", [[3, 254], [254, 255], [300, 301]], ids=["u8", "edge", "i32"])
def test_both_argmax_forms_agree_and_widen_the_labels_past_255(slots: list[int]) -> None:
    """The labels are ``slot + 1``: uint8 while the last slot + 1 fits, int32 from 256 on."""
    rng = np.random.default_rng(len(slots) + slots[0])
    maps = torch.from_numpy(rng.random((2, 7, 8)).astype(np.float32))
    size = (7, 8)
    labels, best = chunked_argmax([(slots, maps)], size, 0.3, torch.device("cpu"))
    with tensor_paths():
        by_tensors, best_by_tensors = chunked_argmax([(slots, maps)], size, 0.3, labels.device)
    assert labels.dtype == by_tensors.dtype
    assert labels.dtype == (torch.uint8 if slots[-1] + 1 < 256 else torch.int32)
    assert torch.equal(labels, by_tensors) and torch.equal(best, best_by_tensors)
    assert set(labels.unique().tolist()) == {0, slots[0] + 1, slots[1] + 1}


def test_label_counts_and_sums_are_the_same_from_numpy_and_from_tensor_operations() -> None:
    rng = np.random.default_rng(9)
    labels = torch.from_numpy(rng.integers(0, 5, (60, 70)).astype(np.uint8))
    values = torch.from_numpy(rng.random((60, 70)).astype(np.float32))
    counts, sums = label_counts(labels, 7), label_sums(labels, values, 7)
    with tensor_paths():
        assert label_counts(labels, 7) == counts and label_sums(labels, values, 7) == sums
    assert counts[:5] == np.bincount(labels.numpy().ravel()).tolist() and counts[5:] == [0, 0]
    assert sums[6] == 0.0
    expected = [math.fsum(values.numpy()[labels.numpy() == k].astype(np.float64)) for k in range(5)]
    assert sums[:5] == pytest.approx(expected, rel=1e-12)
