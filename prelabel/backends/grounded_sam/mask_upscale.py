"""SAM's low-resolution masks to the image size, as ``SamImageProcessor.post_process_masks``
does it, without upscaling the padding that the processor then throws away.

The processor upscales each ``256 x 256`` map to the padded ``1024 x 1024`` square, crops the
part the image occupied (``1024 x 576`` for a 16:9 image) and upscales that to the image. For a
landscape image 44% of the first upscale is padding, and per mask that first upscale is a third
of the post-processing (each box mask and each stuff map of every image goes through it).

The first upscale is an integer factor (``1024 / 256``), and bilinear interpolation with
``align_corners=False`` finds an output row's two source rows and weights from its index and
that factor alone. So the top rows of the upscaled map are those of the upscaled top rows of
the input, given one source row of margin (the last row's missing lower neighbour changes only
output rows below the ones kept): the same values bit for bit, which
``tests/test_mask_upscale.py`` checks against the processor for landscape, portrait, square and
odd sizes. Where the factor is not an integer the whole map is upscaled, as the processor does.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["upscale_masks"]


def upscale_masks(
    low_res: torch.Tensor,
    original_size: tuple[int, int],
    reshaped_size: tuple[int, int],
    pad_size: tuple[int, int],
) -> torch.Tensor:
    """``(N, C, h, w)`` float maps -> ``(N, C, H, W)`` at ``original_size``, the values of
    ``post_process_masks(..., binarize=False)``; sizes are ``(height, width)``."""
    height, width = low_res.shape[-2:]
    rows = _source_lines(height, pad_size[0], reshaped_size[0])
    cols = _source_lines(width, pad_size[1], reshaped_size[1])
    padded = (pad_size[0] * rows // height, pad_size[1] * cols // width)
    upscaled = F.interpolate(
        low_res[..., :rows, :cols], padded, mode="bilinear", align_corners=False
    )
    kept = upscaled[..., : reshaped_size[0], : reshaped_size[1]]
    return F.interpolate(kept, original_size, mode="bilinear", align_corners=False)


def pad_size_of(image_processor: Any) -> tuple[int, int]:
    """The ``(height, width)`` square SAM's processor pads images to (``pad_size``)."""
    pad = image_processor.pad_size
    return int(pad["height"]), int(pad["width"])


def _source_lines(low: int, padded: int, kept: int) -> int:
    """How many of ``low`` input lines give the first ``kept`` of ``padded`` output lines
    exactly: output line ``i`` reads input lines ``floor((i + 0.5) / k - 0.5)`` and the next,
    so ``ceil(kept / k) + 1`` lines suffice for an integer factor ``k``; all otherwise."""
    if padded % low:
        return low
    factor = padded // low
    return min(low, -(-kept // factor) + 1)
