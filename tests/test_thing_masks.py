"""Thing masks kept on the device: each mask's tight window to the host, the union rebuilt on the
device from crops, both against plain numpy on the full-size masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prelabel.backends.grounded_sam.fastest_path import tensor_paths
from prelabel.backends.grounded_sam.segment import SamSegmenter, postprocess_chunk
from prelabel.backends.grounded_sam.thing_masks import crop_to_windows, device_union
from prelabel.panoptic import MaskCandidate
from tests.fixtures.images import noise_image


def random_masks(rng: np.random.Generator, count: int, shape: tuple[int, int]) -> np.ndarray:
    """Blobs of random size and place, some touching the image's edges, some empty."""
    height, width = shape
    yy, xx = np.mgrid[:height, :width]
    masks = np.zeros((count, height, width), dtype=bool)
    for mask in masks:
        if rng.random() < 0.2:
            continue  # empty
        cy, cx = rng.uniform(-2, height + 2), rng.uniform(-2, width + 2)
        ry, rx = rng.uniform(0.5, height / 2), rng.uniform(0.5, width / 2)
        mask[:] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        mask &= rng.random((height, width)) < 0.9  # holes, so the window is not the blob's box
    return masks


def tight_window(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


@pytest.mark.parametrize("seed", range(8))
def test_crops_are_each_masks_tight_window(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 40)), int(rng.integers(1, 40)))
    masks = random_masks(rng, int(rng.integers(1, 12)), shape)

    crops = crop_to_windows(torch.from_numpy(masks))

    assert len(crops) == len(masks)
    for mask, (crop, (top, left)) in zip(masks, crops, strict=True):
        window = tight_window(mask)
        if window is None:
            assert crop.shape == (0, 0) and (top, left) == (0, 0)
            continue
        r0, r1, c0, c1 = window
        assert (top, left) == (r0, c0) and crop.dtype == np.bool_
        np.testing.assert_array_equal(crop, mask[r0:r1, c0:c1])


def test_no_masks_give_no_crops() -> None:
    assert crop_to_windows(torch.zeros((0, 5, 7), dtype=torch.bool)) == []


@pytest.mark.parametrize("seed", range(6))
def test_the_device_union_of_crops_is_the_union_of_the_full_masks(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    shape = (int(rng.integers(2, 30)), int(rng.integers(2, 30)))
    masks = random_masks(rng, int(rng.integers(1, 8)), shape)
    things = []
    for index, mask in enumerate(masks):
        full = MaskCandidate(mask, category_id=index, score=0.5, is_thing=True)
        things.append(full if rng.random() < 0.3 else full.cropped())  # mixed, as in a sequence

    union = device_union(things, shape, torch.device("cpu"))

    assert union is not None and union.dtype == torch.bool
    np.testing.assert_array_equal(union.numpy(), masks.any(axis=0))


def test_no_things_have_no_union_and_a_wrong_frame_is_refused() -> None:
    assert device_union([], (4, 6), torch.device("cpu")) is None
    cropped = MaskCandidate(np.ones((2, 2), bool), 1, 0.5, True, origin=(1, 1), frame=(4, 7))
    with pytest.raises(ValueError, match=r"frame \(4, 7\) for an image of size \(4, 6\)"):
        device_union([cropped], (4, 6), torch.device("cpu"))


def test_box_masks_are_the_same_whatever_the_chunk(tiny_models: object) -> None:
    """A CPU device upscales a few masks at a time (their bytes bounded), an accelerator 16:
    each mask is upscaled on its own, so the crops are the same."""
    segmenter = SamSegmenter(tiny_models.sam, tiny_models.sam_processor, tiny_models.device)
    embedding = segmenter.embed(noise_image(1400, 1000, 5, high=255))
    cpu = torch.device("cpu")
    assert postprocess_chunk(cpu, (1000, 1400)) == 2  # 5.6 MB a mask, 16 MiB a chunk
    assert postprocess_chunk(cpu, (64, 96)) == 16
    rng = np.random.default_rng(3)
    corners = np.sort(rng.uniform(0, 1000, (7, 2, 2)), axis=1)
    boxes = corners.reshape(7, 4).astype(np.float32)  # x0, y0, x1, y1
    by_twos = segmenter.box_crops(embedding, boxes)
    with tensor_paths():
        assert postprocess_chunk(cpu, (1000, 1400)) == 16
        at_once = segmenter.box_crops(embedding, boxes)
    assert len(by_twos.crops) == len(at_once.crops) == 7
    assert any(crop.size for crop in by_twos.crops)
    assert by_twos.origins == at_once.origins
    assert all(np.array_equal(a, b) for a, b in zip(by_twos.crops, at_once.crops, strict=True))
    assert np.array_equal(by_twos.scores, at_once.scores)
