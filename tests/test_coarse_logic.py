"""CLIPSeg post-processing on deterministic maps: thresholds, overlaps, point sampling."""

from __future__ import annotations

import numpy as np
import pytest

from prelabel.backends.grounded_sam.coarse import (
    coarse_labels,
    interior_points,
    sample_region_points,
    scale_points,
)


def test_overlaps_go_to_the_highest_probability_above_threshold() -> None:
    probs = np.array(
        [
            [[0.9, 0.5, 0.1]],  # sky
            [[0.8, 0.6, 0.35]],  # road
        ],
        dtype=np.float32,
    )
    assert coarse_labels(probs, [0.4, 0.4]).tolist() == [[0, 1, -1]]
    # a higher threshold removes sky from the contest in pixel 0
    assert coarse_labels(probs, [0.95, 0.3]).tolist() == [[1, 1, 1]]


def test_points_sit_inside_each_connected_region() -> None:
    labels = np.full((20, 30), -1)
    labels[2:8, 2:10] = 0  # region A of prompt 0
    labels[12:19, 20:29] = 0  # region B of prompt 0
    labels[12:19, 2:6] = 1  # prompt 1
    labels[0, 29] = 1  # a 1-pixel speck, too small
    probs = np.zeros((2, 20, 30), dtype=np.float32)
    probs[0][labels == 0] = 0.8
    probs[1][labels == 1] = 0.6
    regions = sample_region_points(
        labels, probs, points_per_region=3, min_region_pixels=4, max_regions=8
    )
    assert [r.prompt_index for r in regions] == [0, 0, 1]
    for region in regions:
        assert region.points.shape == (3, 2)
        cols, rows = np.floor(region.points).astype(int).T
        assert (labels[rows, cols] == region.prompt_index).all()
    assert regions[0].score == pytest.approx(0.8)
    assert regions[2].score == pytest.approx(0.6)


def test_interior_points_are_spread_and_deterministic() -> None:
    mask = np.zeros((10, 40), dtype=bool)
    mask[2:8, 1:39] = True
    points = interior_points(mask, 3)
    assert np.array_equal(points, interior_points(mask, 3))
    xs = sorted(points[:, 0])
    assert xs[-1] - xs[0] > 20  # spread along the long axis, not clustered
    assert len({tuple(p) for p in points}) == 3


def test_interior_points_repeat_in_a_tiny_region() -> None:
    mask = np.zeros((5, 5), dtype=bool)
    mask[2, 2] = True
    assert interior_points(mask, 4).tolist() == [[2.5, 2.5]] * 4
    with pytest.raises(ValueError, match="empty region"):
        interior_points(np.zeros((3, 3), dtype=bool), 1)


def test_scale_points_per_axis() -> None:
    pts = np.array([[176.0, 176.0]], dtype=np.float32)
    assert scale_points(pts, (352, 352), (1920, 1080)).tolist() == [[960.0, 540.0]]


def test_only_the_largest_regions_get_prompts() -> None:
    labels = np.full((10, 40), -1)
    for i, width in enumerate([2, 5, 3, 4]):  # four separate regions of prompt 0
        labels[1:3, i * 10 : i * 10 + width] = 0
    probs = np.where(labels == 0, 0.9, 0.0)[None].astype(np.float32)
    regions = sample_region_points(
        labels, probs, points_per_region=1, min_region_pixels=1, max_regions=2
    )
    xs = sorted(float(r.points[0, 0]) for r in regions)
    assert len(regions) == 2
    assert 10 <= xs[0] < 15 and 30 <= xs[1] < 34  # the 5- and 4-wide regions
