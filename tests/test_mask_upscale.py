"""SAM's mask post-processing without the padding: the processor's values, bit for bit."""

from __future__ import annotations

import pytest
import torch
from transformers import SamImageProcessor

from prelabel.backends.grounded_sam.mask_upscale import pad_size_of, upscale_masks

#: (height, width) of images: landscape, portrait, square, odd, and extreme strips.
SIZES = [(720, 1280), (1080, 1920), (1920, 1080), (333, 517), (1000, 1000), (7, 1500), (1500, 7)]


def reshaped(processor: SamImageProcessor, size: tuple[int, int]) -> tuple[int, int]:
    height, width = processor._get_preprocess_shape(size, processor.size["longest_edge"])
    return int(height), int(width)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("binarize", [False, True])
def test_upscale_equals_the_processor(size: tuple[int, int], binarize: bool) -> None:
    processor = SamImageProcessor()
    generator = torch.Generator().manual_seed(sum(size))
    low_res = torch.randn(3, 1, 256, 256, generator=generator) * 6
    inner = reshaped(processor, size)
    (expected,) = processor.post_process_masks(
        [low_res.clone()], [size], [inner], binarize=binarize
    )
    ours = upscale_masks(low_res, size, inner, pad_size_of(processor))
    if binarize:
        ours = ours > 0.0
    assert ours.shape == expected.shape == (3, 1, *size)
    assert torch.equal(ours, expected)


def test_a_factor_that_is_not_an_integer_upscales_everything() -> None:
    """A 250-pixel map into a 1024 square: no shortcut, still the processor's values."""
    processor = SamImageProcessor()
    low_res = torch.randn(2, 1, 250, 250, generator=torch.Generator().manual_seed(1))
    (expected,) = processor.post_process_masks(
        [low_res.clone()], [(720, 1280)], [(576, 1024)], binarize=False
    )
    assert torch.equal(upscale_masks(low_res, (720, 1280), (576, 1024), (1024, 1024)), expected)


def test_without_enough_margin_the_values_differ() -> None:
    """The one row of margin matters: cutting the input at exactly ``kept / factor`` rows
    changes the last kept rows (so the equality above is not vacuous)."""
    low_res = torch.randn(1, 1, 256, 256, generator=torch.Generator().manual_seed(2)) * 6
    full = torch.nn.functional.interpolate(low_res, (1024, 1024), mode="bilinear")[..., :576, :]
    short = torch.nn.functional.interpolate(low_res[..., :144, :], (576, 1024), mode="bilinear")
    assert not torch.equal(full, short)
