"""Pillow's antialiased resize of 8-bit images, bit for bit, as tensor ops on any device.

The models were trained on inputs their processors resize with PIL, and the seed's own loop (the
reference port) uses those processors; torch's own antialiased ``interpolate`` differs from PIL
by one level on a few percent of pixels, which on the tiny test models moves the stuff branch's
point draws. This is Pillow's algorithm (``libImaging/Resample.c``): a horizontal then a vertical
pass, each with the filter's weights in 22-bit fixed point and the result rounded and clipped to
``uint8`` in between. Weights are computed on the host (once per size pair, cached); the passes
are gathers and integer multiply-adds (int32: 255 x 2**22 x the weights' sum fits).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import numpy.typing as npt
import torch

_PRECISION_BITS = 32 - 8 - 2


def _bilinear(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _bicubic(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    a, x = -0.5, np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


#: Filter and support per torch mode name (Pillow's BILINEAR and BICUBIC).
_FILTERS = {"bilinear": (_bilinear, 1.0), "bicubic": (_bicubic, 2.0)}


@functools.lru_cache(maxsize=64)
def coefficients(
    in_size: int, out_size: int, mode: str
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
    """``(out_size, taps)`` source indices and fixed-point weights, as Pillow's
    ``precompute_coeffs`` and ``normalize_coeffs_8bpc`` make them (unused taps: weight 0)."""
    kernel, support = _FILTERS[mode]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support *= filterscale
    taps = math.ceil(support) * 2 + 1
    center = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    # C's (int) truncates toward zero; both bounds are clipped to the image as Pillow does
    xmin = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    xmax = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size) - xmin
    offsets = np.arange(taps)
    used = offsets[None, :] < xmax[:, None]
    raw = kernel((offsets[None, :] + xmin[:, None] - center[:, None] + 0.5) / filterscale)
    raw = np.where(used, raw, 0.0)
    total = raw.sum(axis=1, keepdims=True)
    weight = np.divide(raw, total, out=raw.copy(), where=total != 0.0)
    index = np.where(used, offsets[None, :] + xmin[:, None], xmin[:, None])
    scaled = weight * (1 << _PRECISION_BITS)
    fixed = np.where(scaled < 0, np.trunc(scaled - 0.5), np.trunc(scaled + 0.5))
    return index, fixed.astype(np.int32)


def _pass(pixels: torch.Tensor, out_size: int, mode: str) -> torch.Tensor:
    """One axis of the resize, the leading one of int32 ``pixels`` (whole rows are gathered,
    which is a copy of contiguous memory rather than a gather per element)."""
    index_np, weight_np = coefficients(pixels.shape[0], out_size, mode)
    index = torch.from_numpy(index_np).to(pixels.device)
    weight = torch.from_numpy(weight_np).to(pixels.device)
    shape = (-1,) + (1,) * (pixels.dim() - 1)
    acc = torch.full(
        (out_size, *pixels.shape[1:]), 1 << (_PRECISION_BITS - 1), dtype=torch.int32
    ).to(pixels.device)
    for tap in range(index.shape[1]):
        # indexing, not index_select: several times faster for whole rows on the CPU
        acc.addcmul_(pixels[index[:, tap]], weight[:, tap].view(shape))
    return torch.bitwise_right_shift(acc, _PRECISION_BITS).clamp_(0, 255)


def resize(pixels: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """``(H, W, C)`` uint8 ``pixels`` resized to ``size`` ``(height, width)`` as
    ``PIL.Image.resize`` with ``mode``'s filter resizes them (Pillow's order: width first);
    ``(h, w, C)`` uint8. Transposes are done on uint8, a quarter of the int32 memory."""
    out = pixels
    if size[1] != out.shape[1]:
        wide = out.transpose(0, 1).contiguous().to(torch.int32)
        out = _pass(wide, size[1], mode).to(torch.uint8).transpose(0, 1)
    if size[0] != out.shape[0]:
        out = _pass(out.contiguous().to(torch.int32), size[0], mode).to(torch.uint8)
    return out
