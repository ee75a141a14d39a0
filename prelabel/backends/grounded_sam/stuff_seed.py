"""Stuff masks the way the seed demo makes them (``pipeline.stuff_method: seed``, the default).

The seed is segments-ai/panoptic-segment-anything; its algorithm is written down step by step in
the project notes (seed-algorithm.md, steps 2 to 4), and this module follows it exactly so that
runs are reproducible and comparable with it:

1. CLIPSeg's logits are upscaled bilinearly (``align_corners=False``) to the size of the image
   the models see, then passed through the sigmoid. Per pixel, the argmax over
   ``[background_threshold, each stuff category's probability]``, ties to background.
2. Pixels of every thing mask become background: a "road" point must not land on a car and pull
   it into the road. Each category's pixels are eroded with a ``shrink_kernel`` square, which
   keeps points off CLIPSeg's blurry edges; its relative size is its eroded pixel count over the
   largest category's.
3. A category gets ``N = int(relative_size * num_samples_factor)`` points, drawn with
   replacement and weighted by its probability inside its eroded pixels, from a generator of its
   own, ``numpy.random.default_rng([seed, category_id])``: a change in one category never moves
   another category's points.
4. One SAM decoder call per category with all its points as positive prompts; the pixel-wise
   maximum of the sigmoids of SAM's three masks, upscaled to the image. Per pixel, the argmax
   over ``[background_threshold, each category's SAM probability]``, ties to background. So SAM,
   at full resolution, decides where one kind of stuff ends and the next begins.

Memory stays bounded at the working size (``max_image_side``) whatever the taxonomy: the
argmaxes run over one category at a time against a running maximum, so the ``P`` full-size
probability maps of either model are never held together. A category's upscaled CLIPSeg map is
computed again when its points are drawn rather than kept; its eroded pixels are kept cropped to
their extent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from scipy import ndimage

from prelabel.backends.grounded_sam.segment import ImageEmbedding, SamSegmenter
from prelabel.config import PipelineSettings
from prelabel.panoptic import MaskCandidate
from prelabel.pipeline.clock import StageClock
from prelabel.taxonomy import CategoryPrompt

logger = logging.getLogger(__name__)

_Window = tuple[slice, slice]
#: A category's eroded pixels: the window they lie in and the mask inside it.
Region = tuple[_Window, npt.NDArray[np.bool_]]


def seed_stuff(
    logits: torch.Tensor,
    prompts: Sequence[CategoryPrompt],
    things: npt.NDArray[np.bool_] | None,
    embedding: ImageEmbedding,
    segmenter: SamSegmenter,
    settings: PipelineSettings,
    clock: StageClock,
) -> list[MaskCandidate]:
    """One mask candidate per stuff category that wins pixels, at the embedded image's size.

    ``logits`` is CLIPSeg's ``(P, h, w)`` per prompt; ``things`` the union of the thing masks
    (``(H, W)`` bool) or None. A candidate's score is SAM's mean probability over its pixels.
    """
    size = embedding.original_size
    with clock("coarse"):
        index = coarse_index(logits, size, settings.background_threshold)
        if things is not None:
            index[things] = 0
        regions = eroded_regions(index, len(prompts), settings.shrink_kernel)
        counts = [0 if r is None else int(np.count_nonzero(r[1])) for r in regions]
        point_sets: dict[int, npt.NDArray[np.float32]] = {}
        for slot, n in enumerate(sample_counts(counts, settings.num_samples_factor)):
            region = regions[slot]
            if n == 0 or region is None:
                continue
            probability = upscaled_probability(logits[slot], size).cpu().numpy()
            rng = np.random.default_rng([settings.seed, prompts[slot].category_id])
            point_sets[slot] = draw_points(clipped_weights(probability, region), n, rng)
        logger.debug(
            "seed stuff: %d of %d categories prompt SAM, %d points in all",
            len(point_sets),
            len(prompts),
            sum(len(points) for points in point_sets.values()),
        )
    with clock("stuff"):
        maps = (
            (slot, segmenter.point_probability(embedding, points))
            for slot, points in point_sets.items()
        )
        labels, best = running_argmax(maps, size, settings.background_threshold, logits.device)
        return _candidates(labels.cpu().numpy(), best.cpu().numpy(), prompts)


def upscaled_probability(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(h, w)`` logits -> ``(H, W)`` float32 probabilities: bilinear first, sigmoid second,
    as the seed does (the other order would blur probabilities instead of logits)."""
    upscaled = F.interpolate(
        logits.float()[None, None], size=size, mode="bilinear", align_corners=False
    )
    return upscaled[0, 0].sigmoid()


def coarse_index(
    logits: torch.Tensor, size: tuple[int, int], background: float
) -> npt.NDArray[np.integer]:
    """Step 1: ``(H, W)`` CLIPSeg label per pixel, 0 = background, ``c + 1`` = prompt ``c``."""
    upscaled = ((slot, upscaled_probability(logits[slot], size)) for slot in range(len(logits)))
    labels, _ = running_argmax(upscaled, size, background, logits.device)
    return labels.cpu().numpy()


def running_argmax(
    maps: Iterable[tuple[int, torch.Tensor]],
    size: tuple[int, int],
    background: float,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax over ``[background, map_0, map_1, ...]`` holding one map at a time.

    ``maps`` yields ``(slot, (H, W) probabilities)`` in ascending slot order; a map replaces
    the current best only where it is strictly higher, so ties go to background and then to the
    lower slot, as ``argmax`` over the stacked maps would. A slot never yielded is a map of
    zeros (it never beats a background >= 0). Returns the labels (0 = background, ``slot + 1``,
    the smallest integer dtype that holds them) and the winning probability per pixel.
    """
    best = torch.full(size, float(background), dtype=torch.float32, device=device)
    labels = torch.zeros(size, dtype=torch.int32, device=device)
    top = 0
    for slot, probability in maps:
        labels.masked_fill_(probability > best, slot + 1)
        torch.maximum(best, probability, out=best)
        top = slot + 1
    return labels.to(torch.uint8 if top < 2**8 else torch.int32), best


def eroded_regions(labels: npt.NDArray[np.integer], count: int, kernel: int) -> list[Region | None]:
    """Step 2: per prompt, its pixels eroded with a ``kernel`` square (0 = none), or None.

    Same result as ``scipy.ndimage.binary_erosion`` of each prompt's mask with
    ``np.ones((kernel, kernel))``, pixels outside the image counting as outside the region, but
    for all prompts at once: a pixel survives exactly when every label in its window equals its
    own, that is when the window's minimum equals its maximum (outside the image counts as 0).
    Two separable filters over the label map, whatever the number of prompts.
    """
    eroded = labels
    if kernel > 0:
        low = ndimage.minimum_filter(labels, size=kernel, mode="constant", cval=0)
        high = ndimage.maximum_filter(labels, size=kernel, mode="constant", cval=0)
        eroded = np.where(low == high, labels, 0).astype(labels.dtype, copy=False)
    windows = ndimage.find_objects(eroded, max_label=count)
    return [
        None if window is None else (window, eroded[window] == slot + 1)
        for slot, window in enumerate(windows)
    ]


def sample_counts(counts: Sequence[int], factor: int) -> list[int]:
    """Step 3: ``int(count / largest count * factor)`` points per prompt, the seed's rounding."""
    largest = max(counts, default=0)
    if largest == 0:
        return [0] * len(counts)
    return [int(count / largest * factor) for count in counts]


def clipped_weights(
    probability: npt.NDArray[np.float32], region: Region
) -> npt.NDArray[np.float64]:
    """The ``(H, W)`` probability map times the eroded mask, as float64 (exact: the mask is
    0 or 1 and float32 -> float64 is lossless)."""
    window, mask = region
    weights = np.zeros(probability.shape, dtype=np.float64)
    weights[window][mask] = probability[window][mask]
    return weights


def draw_points(
    weights: npt.NDArray[np.float64], n: int, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """``n`` pixel positions ``(x, y)`` drawn with replacement, proportional to ``(H, W)``
    ``weights``, which must have a positive sum.

    The draw is exactly ``flat = rng.choice(H * W, size=n, replace=True, p=w / w.sum())`` with
    ``w`` flattened row by row, and points ``(flat % W, flat // W)``: the same generator and
    weights give the same points on every machine, and another implementation can repeat it.
    """
    width = weights.shape[1]
    flat_weights = weights.ravel()
    flat = rng.choice(flat_weights.size, size=n, replace=True, p=flat_weights / flat_weights.sum())
    return np.stack([flat % width, flat // width], axis=1).astype(np.float32)


def _candidates(
    labels: npt.NDArray[np.integer],
    best: npt.NDArray[np.float32],
    prompts: Sequence[CategoryPrompt],
) -> list[MaskCandidate]:
    flat = labels.ravel()
    areas = np.bincount(flat, minlength=len(prompts) + 1)
    totals = np.bincount(flat, weights=best.ravel(), minlength=len(prompts) + 1)
    return [
        MaskCandidate(
            mask=labels == slot + 1,
            category_id=prompt.category_id,
            score=float(totals[slot + 1] / areas[slot + 1]),
            is_thing=False,
        )
        for slot, prompt in enumerate(prompts)
        if areas[slot + 1] > 0
    ]
