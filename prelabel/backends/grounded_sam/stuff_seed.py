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
   another category's points. The draw is exactly ``rng.choice(H * W, size=N, p=w / total)``
   with ``w`` the weights of the whole image flattened row by row (0 outside the eroded
   pixels) and ``total`` the sum of the eroded pixels' weights taken in that order
   (``w[eroded].sum()``, not ``w.sum()``: the two can differ in the last bit, and the first
   lets the draw cost in proportion to the region rather than the image; the reference port in
   ``tests/reference/`` says the same).
4. One SAM decoder call per category with all its points as positive prompts; the pixel-wise
   maximum of the sigmoids of SAM's three masks, upscaled to the image. Per pixel, the argmax
   over ``[background_threshold, each category's SAM probability]``, ties to background. So SAM,
   at full resolution, decides where one kind of stuff ends and the next begins.

How it runs (same output, a GPU kept busy, the host kept light): the argmaxes, the upscaling,
the removal of things and the erosion run on the model's device; a category's weights are read
from the coarse argmax's winning probability (in its eroded pixels it is that category's own
upscaled CLIPSeg probability), so each CLIPSeg map is upscaled once; the draw reads only the
region's pixels; the categories' point prompts go to SAM
:data:`STUFF_PROMPTS_PER_CALL` at a time, padded (:meth:`SamSegmenter.point_probabilities`),
each decoded as in a call of its own; the final labels come to host memory once per image.
Memory stays bounded at the working size (``max_image_side``) whatever the taxonomy: at most
:data:`STUFF_PROMPTS_PER_CALL` full-size maps of either model are held at a time, the argmaxes
keeping a running maximum that each chunk of maps joins with one ``torch.max``
(:func:`chunked_argmax`). On a CPU device the argmaxes, the label counts and the search for a
region's pixels use numpy, which is faster there than tensor operations and gives the same
result (:mod:`.fastest_path`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from prelabel.backends.grounded_sam.fastest_path import use_host_libraries
from prelabel.backends.grounded_sam.segment import ImageEmbedding, SamSegmenter
from prelabel.backends.grounded_sam.thing_masks import device_union
from prelabel.config import PipelineSettings
from prelabel.panoptic import MaskCandidate
from prelabel.pipeline.clock import StageClock
from prelabel.taxonomy import CategoryPrompt

logger = logging.getLogger(__name__)

#: Stuff categories upscaled, or decoded by SAM, together: a bound on the full-size float maps
#: held at once (8 x 1920 x 1080 x 4 bytes = 66 MB), whatever the number of categories.
STUFF_PROMPTS_PER_CALL = 8


def seed_stuff(
    logits: torch.Tensor,
    prompts: Sequence[CategoryPrompt],
    things: Sequence[MaskCandidate],
    embedding: ImageEmbedding,
    segmenter: SamSegmenter,
    settings: PipelineSettings,
    clock: StageClock,
) -> list[MaskCandidate]:
    """One mask candidate per stuff category that wins pixels, at the embedded image's size.

    ``logits`` is CLIPSeg's ``(P, h, w)`` per prompt, on the model's device; ``things`` the
    thing candidates whose pixels stuff may not take (their union is made on the device from
    their crops, :func:`.thing_masks.device_union`). A candidate's score is SAM's mean
    probability over its pixels.
    """
    size = embedding.original_size
    with clock("coarse"):
        labels, best = coarse_argmax(logits, size, settings.background_threshold)
        union = device_union(things, size, labels.device)
        if union is not None:
            labels.masked_fill_(union, 0)
        eroded = erode_labels(labels, settings.shrink_kernel).flatten()
        counts = label_counts(eroded, len(prompts) + 1)[1:]
        point_sets: dict[int, npt.NDArray[np.float32]] = {}
        for slot, n in enumerate(sample_counts(counts, settings.num_samples_factor)):
            if n == 0:
                continue
            pixels, weights = region_weights(eroded, best.flatten(), slot)
            rng = np.random.default_rng([settings.seed, prompts[slot].category_id])
            point_sets[slot] = draw_region_points(pixels, weights, size[1], n, rng)
        logger.debug(
            "seed stuff: %d of %d categories prompt SAM, %d points in all",
            len(point_sets),
            len(prompts),
            sum(len(points) for points in point_sets.values()),
        )
    with clock("stuff"):
        maps = _sam_maps(segmenter, embedding, point_sets)
        labels, best = chunked_argmax(maps, size, settings.background_threshold, logits.device)
        return _candidates(labels, best, prompts)


def _sam_maps(
    segmenter: SamSegmenter,
    embedding: ImageEmbedding,
    point_sets: dict[int, npt.NDArray[np.float32]],
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """``(slots, (len(slots), H, W) SAM probabilities)`` in slot order,
    :data:`STUFF_PROMPTS_PER_CALL` categories per decoder call."""
    slots = sorted(point_sets)
    for start in range(0, len(slots), STUFF_PROMPTS_PER_CALL):
        chunk = slots[start : start + STUFF_PROMPTS_PER_CALL]
        yield chunk, segmenter.point_probabilities(embedding, [point_sets[s] for s in chunk])


def upscaled_probability(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(..., h, w)`` logits -> ``(..., H, W)`` float32 probabilities: bilinear first, sigmoid
    second, as the seed does (the other order would blur probabilities instead of logits)."""
    flat = logits.float().reshape(-1, 1, *logits.shape[-2:])
    upscaled = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    # in place: the same values, without a second full-size allocation (on a CPU, filling
    # fresh pages cost more than the sigmoid itself)
    return upscaled.reshape(*logits.shape[:-2], *size).sigmoid_()


def coarse_argmax(
    logits: torch.Tensor, size: tuple[int, int], background: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 1 on the logits' device: ``(H, W)`` CLIPSeg label per pixel (0 = background,
    ``c + 1`` = prompt ``c``) and the winning probability, which in a pixel labelled ``c + 1``
    is prompt ``c``'s own upscaled probability. :data:`STUFF_PROMPTS_PER_CALL` maps upscaled
    at a time."""

    def maps() -> Iterator[tuple[list[int], torch.Tensor]]:
        slots = can_win(logits, background)
        for start in range(0, len(slots), STUFF_PROMPTS_PER_CALL):
            chunk = slots[start : start + STUFF_PROMPTS_PER_CALL]
            yield chunk, upscaled_probability(logits[chunk], size)

    return chunked_argmax(maps(), size, background, logits.device)


def can_win(logits: torch.Tensor, background: float) -> list[int]:
    """The prompts whose ``(h, w)`` logits could beat ``background`` somewhere once upscaled.

    Bilinear upscaling averages neighbouring values, so no upscaled logit exceeds the map's
    maximum (by more than rounding, hence the margin of 1e-3); a map whose maximum stays under
    the background's logit never wins a pixel, and leaving it out of the running argmax changes
    nothing. With a large taxonomy most stuff maps are of that kind, and they cost neither an
    upscale nor a sigmoid.
    """
    if background <= 0:
        return list(range(len(logits)))
    if background >= 1:
        return []
    threshold = math.log(background / (1 - background)) - 1e-3
    peaks = logits.float().flatten(1).amax(dim=1)
    return torch.nonzero(peaks > threshold).flatten().tolist()


def coarse_index(
    logits: torch.Tensor, size: tuple[int, int], background: float
) -> npt.NDArray[np.integer]:
    """:func:`coarse_argmax`'s labels in host memory."""
    labels, _ = coarse_argmax(logits, size, background)
    return labels.cpu().numpy()


def chunked_argmax(
    chunks: Iterable[tuple[Sequence[int], torch.Tensor]],
    size: tuple[int, int],
    background: float,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax over ``[background, map_0, map_1, ...]`` holding one chunk of maps at a time.

    ``chunks`` yields ``(slots, (len(slots), H, W) probabilities)``, the slots ascending within
    and across chunks. Ties go to background and then to the lower slot, as ``argmax`` over the
    stacked maps would: a chunk is reduced with one ``torch.max`` over its maps (ties to the
    first index, as torch documents it) and replaces the current best only where its maximum is
    strictly higher. So a chunk costs one pass over its maps and a few over one map's size,
    instead of three passes per map. A slot never yielded is a map of zeros (it never beats a
    background >= 0). The maps are finite (the models' outputs are checked). Returns the labels
    (0 = background, ``slot + 1``, the smallest integer dtype that holds them) and the winning
    probability per pixel. On a CPU device :func:`_host_argmax` gives the same result one map
    at a time in numpy (:mod:`.fastest_path`).
    """
    if use_host_libraries(device):
        return _host_argmax(chunks, size, background)
    best = torch.full(size, float(background), dtype=torch.float32, device=device)
    labels = torch.zeros(size, dtype=torch.int32, device=device)
    top = 0
    for slots, maps in chunks:
        if len(slots) == 1:  # one map: no reduction, no lookup
            labels.masked_fill_(maps[0] > best, slots[0] + 1)
            torch.maximum(best, maps[0], out=best)
        else:
            values, index = torch.max(maps, dim=0)
            torch.where(values > best, _slot_labels(index, slots), labels, out=labels)
            torch.maximum(best, values, out=best)
        top = slots[-1] + 1
    return labels.to(torch.uint8 if top < 2**8 else torch.int32), best


def _host_argmax(
    chunks: Iterable[tuple[Sequence[int], torch.Tensor]], size: tuple[int, int], background: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`chunked_argmax` on a CPU device, in numpy (:mod:`.fastest_path`): one map at a
    time, a strictly higher value taking the pixel, so ties go to background and the lower
    slot as there. numpy's comparison, masked copy and maximum run in SIMD on one thread;
    ``torch.max(dim=0)`` with indices is several times slower on a CPU (5 maps at 1280x720:
    about 8 ms against 20). The same labels and values bit for bit: comparisons and maxima
    are exact."""
    best = np.full(size, background, dtype=np.float32)
    labels = np.zeros(size, dtype=np.uint8)
    wins = np.empty(size, dtype=np.bool_)
    for slots, maps in chunks:
        if slots[-1] + 1 >= 2**8 and labels.dtype == np.uint8:
            labels = labels.astype(np.int32)
        for slot, probability in zip(slots, maps.numpy(), strict=True):
            np.greater(probability, best, out=wins)
            np.copyto(labels, slot + 1, where=wins)
            np.maximum(best, probability, out=best)
    return torch.from_numpy(labels), torch.from_numpy(best)


def _slot_labels(index: torch.Tensor, slots: Sequence[int]) -> torch.Tensor:
    """int32 ``slots[index] + 1``: a shift where the slots are consecutive (the usual case),
    a lookup otherwise."""
    if list(slots) == list(range(slots[0], slots[0] + len(slots))):
        return index.to(torch.int32).add_(slots[0] + 1)
    codes = torch.tensor([slot + 1 for slot in slots], dtype=torch.int32, device=index.device)
    return codes[index]


def erode_labels(labels: torch.Tensor, kernel: int) -> torch.Tensor:
    """Step 2 on the labels' device: each label's pixels eroded with a ``kernel`` square (0 =
    none), all labels at once.

    Same result as ``scipy.ndimage.binary_erosion`` of each label's mask with
    ``np.ones((kernel, kernel))``, pixels outside the image counting as outside the region: a
    pixel survives exactly when every label in its window equals its own. The window of an even
    ``kernel`` reaches ``kernel // 2`` pixels up and left, one less down and right, as scipy's.

    For ``kernel >= 2`` a window holds one label exactly when each 2x2 block inside it does (two
    neighbours in the window always share a block in it), so one pass marks the mixed blocks and
    a window survives when none of its ``kernel - 1`` by ``kernel - 1`` blocks is marked
    (:func:`_any_in_runs` along each axis). A window that reaches past the image holds the
    outside's 0 beside a label, or is all 0: either way its pixel ends as 0, so the blocks past
    the image count as mixed. Bool operations only: about 4 ms at 1280x720 on one CPU thread,
    where scipy's minimum and maximum filters took 20, whatever the kernel.
    """
    if kernel <= 1:
        return labels
    height, width = labels.shape
    runs, before = kernel - 1, kernel // 2
    # Block (i, j) of pixels (i..i+1, j..j+1) sits at (i + before, j + before): then the first
    # of the runs that start at a pixel's own index is the window's first block.
    mixed = torch.ones(
        (height + runs - 1, width + runs - 1), dtype=torch.bool, device=labels.device
    )
    inner = mixed[before : before + height - 1, before : before + width - 1]
    top_left, top_right = labels[:-1, :-1], labels[:-1, 1:]
    bottom_left, bottom_right = labels[1:, :-1], labels[1:, 1:]
    torch.ne(top_left, top_right, out=inner)
    inner |= top_left != bottom_left
    inner |= bottom_left != bottom_right
    flagged = _any_in_runs(_any_in_runs(mixed, runs, dim=0), runs, dim=1)
    return labels.masked_fill(flagged, 0)


def _any_in_runs(flags: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """Whether any flag is set in the run of ``length`` along ``dim`` that starts at each index
    (the result is ``length - 1`` shorter there). Runs of a power of two double from runs of
    half that; OR does not mind overlap, so two runs of the largest power of two within
    ``length`` cover it: ``log2(length) + 1`` passes."""
    span = 1
    while span * 2 <= length:
        kept = flags.shape[dim] - span
        flags = flags.narrow(dim, 0, kept) | flags.narrow(dim, span, kept)
        span *= 2
    count = flags.shape[dim] - (length - span)
    return flags.narrow(dim, 0, count) | flags.narrow(dim, length - span, count)


def sample_counts(counts: Sequence[int], factor: int) -> list[int]:
    """Step 3: ``int(count / largest count * factor)`` points per prompt, the seed's rounding."""
    largest = max(counts, default=0)
    if largest == 0:
        return [0] * len(counts)
    return [int(count / largest * factor) for count in counts]


def region_weights(
    eroded: torch.Tensor, probability: torch.Tensor, slot: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Prompt ``slot``'s eroded pixels, as flat row-major indices into the ``(H * W,)`` maps,
    and their probabilities as float64 (exact from float32): the only host copy of the step,
    in proportion to the region. On a CPU device numpy finds them (:mod:`.fastest_path`:
    ``flatnonzero`` is several times faster there than ``torch.nonzero``), same indices."""
    if use_host_libraries(eroded.device):
        found = np.flatnonzero(eroded.numpy() == slot + 1)
        return found, probability.numpy()[found].astype(np.float64)
    pixels = torch.nonzero(eroded == slot + 1).squeeze(1)
    weights = probability[pixels].cpu().numpy().astype(np.float64)
    return pixels.cpu().numpy(), weights


def draw_region_points(
    pixels: npt.NDArray[np.int64],
    weights: npt.NDArray[np.float64],
    width: int,
    n: int,
    rng: np.random.Generator,
) -> npt.NDArray[np.float32]:
    """``n`` pixel positions ``(x, y)`` drawn with replacement, proportional to ``weights`` at
    the flat row-major ``pixels`` (ascending) of an image ``width`` wide; positive sum.

    Exactly ``flat = rng.choice(H * W, size=n, replace=True, p=w / weights.sum())`` with ``w``
    the image's weights flattened (0 off ``pixels``), points ``(flat % width, flat // width)``:
    numpy draws ``n`` uniforms and finds them in the cumulative sum of ``p`` normalised by its
    last value. Zeros leave a cumulative sum unchanged and a uniform lands only where it rises,
    so the same search over the region's own cumulative sum finds the same pixels, at a cost
    in proportion to the region, not the image (``tests/test_seed_stuff.py`` compares the two).
    """
    cdf = np.cumsum(weights / weights.sum())
    cdf /= cdf[-1]
    flat = pixels[np.searchsorted(cdf, rng.random(n), side="right")]
    return np.stack([flat % width, flat // width], axis=1).astype(np.float32)


def _candidates(
    labels: torch.Tensor, best: torch.Tensor, prompts: Sequence[CategoryPrompt]
) -> list[MaskCandidate]:
    """Areas and mean probabilities on the device (float64 sums); the labels then come to host
    memory once, and each category's mask is read from them there."""
    areas = label_counts(labels, len(prompts) + 1)
    totals = label_sums(labels, best, len(prompts) + 1)
    host = labels.cpu().numpy()
    return [
        MaskCandidate(
            mask=host == slot + 1,
            category_id=prompt.category_id,
            score=totals[slot + 1] / areas[slot + 1],
            is_thing=False,
        )
        for slot, prompt in enumerate(prompts)
        if areas[slot + 1] > 0
    ]


def label_counts(labels: torch.Tensor, count: int) -> list[int]:
    """Pixels per label ``0 .. count - 1``: ``numpy.bincount`` on a CPU device, faster there
    than ``torch.bincount`` (:mod:`.fastest_path`; 2.1 against 3.3 ms at 1280x720)."""
    if use_host_libraries(labels.device):
        return np.bincount(labels.numpy().ravel(), minlength=count).tolist()
    return torch.bincount(labels.flatten().long(), minlength=count).tolist()


def label_sums(labels: torch.Tensor, values: torch.Tensor, count: int) -> list[float]:
    """Per label ``0 .. count - 1``, the float64 sum of ``values`` over its pixels. Both
    libraries add a bin's weights one by one in pixel order, so numpy (on a CPU device, where
    it is several times faster: 3.3 against 17.7 ms at 1280x720) and torch give the same sums
    bit for bit."""
    if use_host_libraries(labels.device):
        exact = values.numpy().ravel().astype(np.float64)
        return np.bincount(labels.numpy().ravel(), weights=exact, minlength=count).tolist()
    wide, doubled = labels.flatten().long(), values.flatten().double()
    return torch.bincount(wide, weights=doubled, minlength=count).tolist()
