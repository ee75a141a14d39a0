"""The seed's stuff steps on literal arrays, and two of its promises on the tiny models.

The step functions are checked against the plain operations the seed uses (stacked argmax,
``binary_erosion``, ``rng.choice``), so that the memory-saving forms in
``prelabel.backends.grounded_sam.stuff_seed`` are known to compute the same thing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from prelabel.backends.grounded_sam.backend import GroundedSam
from prelabel.backends.grounded_sam.stuff_seed import (
    clipped_weights,
    coarse_index,
    draw_points,
    eroded_regions,
    running_argmax,
    sample_counts,
    upscaled_probability,
)
from prelabel.config import PipelineSettings
from prelabel.pipeline.pipeline import Pipeline
from prelabel.taxonomy import Category, build_taxonomy
from tests.fixtures.images import noise_image


def test_running_argmax_matches_a_stacked_argmax_with_ties_to_background() -> None:
    maps = torch.tensor(
        [
            [[0.1, 0.6, 0.6, 0.05]],
            [[0.1, 0.6, 0.7, 0.05]],
        ]
    )
    labels, best = running_argmax(enumerate(maps), (1, 4), 0.1, torch.device("cpu"))
    # pixel 0: both tie with the background -> 0; pixel 1: tie between maps -> the first
    assert labels.tolist() == [[0, 1, 2, 0]]
    assert best[0].tolist() == pytest.approx([0.1, 0.6, 0.7, 0.1])
    stacked = torch.cat([torch.full((1, 1, 4), 0.1), maps]).argmax(dim=0)
    assert torch.equal(labels.long(), stacked)
    assert labels.dtype == torch.uint8


def test_a_slot_without_a_map_never_wins() -> None:
    maps = [(1, torch.tensor([[0.3, 0.0]]))]  # slot 0 was skipped (no points)
    labels, _ = running_argmax(maps, (1, 2), 0.0, torch.device("cpu"))
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


@pytest.mark.parametrize("kernel", [0, 1, 2, 3, 5, 20])
def test_erosion_equals_scipy_binary_erosion_with_a_square(kernel: int) -> None:
    rng = np.random.default_rng(kernel)
    labels = np.zeros((70, 90), dtype=np.uint8)
    labels[5:60, 3:50] = 1  # a block touching nothing
    labels[0:30, 60:90] = 2  # a block on the image border (outside counts as outside)
    labels[40:70, 55:90] = rng.integers(0, 4, (30, 35))  # speckle of 1, 2 and 3
    regions = eroded_regions(labels, 4, kernel)
    assert regions[3] is None  # category 4 has no pixel
    for slot in range(3):
        mask = labels == slot + 1
        if kernel:
            mask = ndimage.binary_erosion(mask, structure=np.ones((kernel, kernel)))
        region = regions[slot]
        got = np.zeros_like(mask)
        if region is not None:
            got[region[0]] = region[1]
        assert np.array_equal(got, mask), slot
    assert regions[0] is not None and regions[0][1].any()


def test_relative_sizes_use_the_seed_rounding() -> None:
    assert sample_counts([300, 1000, 0, 999], 1000) == [300, 1000, 0, 999]
    assert sample_counts([1, 3], 10) == [3, 10]  # int(1 / 3 * 10) = 3
    assert sample_counts([0, 0], 1000) == [0, 0]
    assert sample_counts([5, 7], 0) == [0, 0]


def test_points_follow_the_exact_draw_and_stay_on_weighted_pixels() -> None:
    probability = np.random.default_rng(1).random((20, 30)).astype(np.float32)
    mask = np.zeros((20, 30), dtype=bool)
    mask[4:9, 10:25] = True
    region = ((slice(4, 9), slice(10, 25)), mask[4:9, 10:25])
    weights = clipped_weights(probability, region)
    assert weights.dtype == np.float64
    assert np.array_equal(weights, (probability * mask).astype(np.float64))
    points = draw_points(weights, 200, np.random.default_rng([0, 7]))
    w = weights.ravel()
    flat = np.random.default_rng([0, 7]).choice(600, size=200, replace=True, p=w / w.sum())
    assert np.array_equal(points, np.stack([flat % 30, flat // 30], axis=1).astype(np.float32))
    xs, ys = points.astype(int).T
    assert mask[ys, xs].all()


@pytest.fixture(scope="module")
def spied(tiny_models: object) -> tuple[Pipeline, list[np.ndarray]]:
    settings = PipelineSettings(shrink_kernel=0, min_area=0, max_detections=1, box_threshold=0)
    pipeline = Pipeline(GroundedSam(tiny_models), settings)
    calls: list[np.ndarray] = []
    real = pipeline.backend.segmenter.point_probability

    def spy(embedding: object, points: np.ndarray) -> torch.Tensor:
        calls.append(np.asarray(points))
        return real(embedding, points)

    pipeline.backend.segmenter.point_probability = spy
    return pipeline, calls


def _image() -> Image.Image:
    return noise_image(96, 64, 3, high=255)


@pytest.mark.slow
def test_one_sam_call_per_stuff_category_with_its_share_of_points(
    spied: tuple[Pipeline, list[np.ndarray]],
) -> None:
    pipeline, calls = spied
    calls.clear()
    stuff = [Category(1, "sky"), Category(2, "road"), Category(3, "grass")]
    prediction = pipeline.predict(_image(), build_taxonomy(stuff, {}, pipeline.settings))
    assert prediction.segments
    assert len(calls) == 3
    assert max(len(points) for points in calls) == 1000  # the largest category
    assert all(0 < len(points) <= 1000 for points in calls)


@pytest.mark.slow
def test_stuff_points_never_land_on_things(spied: tuple[Pipeline, list[np.ndarray]]) -> None:
    pipeline, calls = spied
    calls.clear()
    categories = [Category(10, "person", True), Category(1, "sky"), Category(2, "road")]
    taxonomy = build_taxonomy(categories, {}, pipeline.settings)
    prediction = pipeline.predict(_image(), taxonomy)
    things = np.isin(prediction.id_map, [s.id for s in prediction.segments if s.is_thing])
    assert 0 < things.mean() < 1
    assert calls
    for points in calls:
        xs, ys = points.astype(int).T
        assert not things[ys, xs].any()
