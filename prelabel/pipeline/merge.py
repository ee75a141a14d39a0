"""Mask candidates -> one panoptic map: the last, model-free stage of the pipeline.

Pure numpy on purpose (no torch): it runs on the CPU after the models, it is the part with the
most edge cases, and it must be testable from small literal arrays.

The rules, in the order they are applied (see :func:`merge_panoptic` for the full contract):

1. *Stuff* is painted first. All candidates of one stuff category form ONE segment (Segments'
   panoptic convention: one annotation per stuff category). Where two stuff categories overlap,
   the candidate with the higher score wins the pixel.
2. *Things* go on top of stuff, in descending score order; each takes only the pixels of its
   mask that no higher-scoring thing took, so the higher score wins every overlap.
3. A thing left with fewer than ``min_area`` pixels (counted at the output size) is dropped
   before it takes anything, so its pixels stay with whatever was beneath: a lower-scoring
   thing, else the stuff. A stuff category left with fewer than ``min_area`` visible pixels is
   dropped and its pixels become 0 (unassigned).
4. Ids are compact, ``1..N``: kept things in descending score order, then kept stuff by
   category id.

A candidate may carry its mask cropped to a window of the working image
(:class:`~prelabel.panoptic.MaskCandidate`'s ``origin`` and ``frame``): the merge then works
inside that window and never looks at, or builds, the full-size mask, so a small thing costs a
small scan. Full-size and cropped masks of the same pixels give the same map.

All decisions are taken at the masks' (working) resolution, with each working pixel weighted by
the number of output pixels it becomes under nearest-neighbour resizing. Areas and the drop rule
are therefore exact at the output size without ever painting at the output size; only the final
id map is resized, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from prelabel.panoptic import MAX_SEGMENT_ID, MaskCandidate, PanopticPrediction, Segment
from prelabel.pipeline.merge_inputs import check_candidates, check_ids

__all__ = ["merge_panoptic"]

_Window = tuple[slice, slice]


def merge_panoptic(
    candidates: Sequence[MaskCandidate],
    *,
    min_area: int,
    output_size: tuple[int, int] | None = None,
    segment_ids: Sequence[int] | None = None,
) -> PanopticPrediction:
    """Merge thing and stuff mask candidates into one panoptic map.

    Args:
        candidates: Masks at the working resolution; every ``mask`` is a 2-D ``bool`` array,
            either of the working shape ``(H, W)`` or a crop of it (``origin`` and ``frame``
            set, ``frame`` the same ``(H, W)`` for all). Not mutated.
        min_area: Segments with fewer pixels than this, counted at the output size, are dropped.
            A segment with no pixel at the output size is always dropped, also for 0.
        output_size: ``(width, height)`` of the original image. The id map is resized to it with
            nearest neighbour, pixel centres aligned as in PIL's resize, which made the working
            image (computed in exact integers; PIL's floats can pick the other pixel at an
            exact tie). ``None`` keeps the masks' own size.
        segment_ids: One id per candidate, to use instead of the compact ids (a sequence's
            track ids). Things need distinct ids; all candidates of one stuff category share
            one id, which no other candidate uses. Every id is in ``1..MAX_SEGMENT_ID``.
            The pixel decisions are the same as without them; segments come sorted by id.

    Returns:
        A :class:`PanopticPrediction` whose ``id_map`` is ``uint32`` of shape
        ``(height, width)`` of the output, 0 where no kept segment covers a pixel, and whose
        segments are sorted by id. Each segment's ``area`` is its pixel count and ``bbox`` the
        COCO ``(x, y, w, h)`` of its pixels, both in the output map.

    Rules:
        - Stuff: candidates of one category are unioned into one segment whose score is the
          mean of the parts' scores weighted by each part's mask area (so a large unsure part
          is not hidden behind a small confident one). A pixel claimed by several stuff
          categories goes to the highest-scoring candidate covering it (ties: the higher
          category id), whatever the input order.
        - Things: placed by descending score (ties: input order); each takes the pixels of its
          mask not taken by a placed thing and overrides stuff. If what it would take is under
          ``min_area`` it is dropped and takes nothing, so it never hides what lies beneath.
        - Stuff is then measured on its visible pixels (not under a kept thing); a category
          under ``min_area`` is dropped and its pixels become 0.
        - Ids: kept things ``1..T`` in placement order, then kept stuff ``T+1..N`` by
          ascending category id. The same input always gives the same map.

    Raises:
        ValueError: a mask is not 2-D ``bool``, candidates differ in working shape (the
            message names the expected and actual shape), a crop does not fit its frame or has
            an origin without one, a score is not finite, ``min_area`` is negative,
            ``output_size`` is not two positive integers, there are no candidates and no
            ``output_size`` (the size would be unknown), or the candidates could need more
            than :data:`MAX_SEGMENT_ID` ids.
    """
    if min_area < 0:
        raise ValueError(f"min_area must be >= 0, got {min_area}")
    shape = check_candidates(candidates, output_size)
    height, width = shape
    out_w, out_h = output_size if output_size is not None else (width, height)
    rows, cols = _Axis.build(height, out_h), _Axis.build(width, out_w)
    threshold = max(min_area, 1)

    things = sorted(
        (i for i, c in enumerate(candidates) if c.is_thing), key=lambda i: -candidates[i].score
    )
    stuff_ids = sorted({c.category_id for c in candidates if not c.is_thing})
    if len(things) + len(stuff_ids) > MAX_SEGMENT_ID:
        raise ValueError(
            f"{len(things) + len(stuff_ids)} possible segments exceed the "
            f"{MAX_SEGMENT_ID} ids a Segments bitmap can hold"
        )
    given = check_ids(candidates, segment_ids)
    windows = [_frame_window(c) for c in candidates]

    stuff_map, stuff_windows = _paint_stuff(candidates, windows, stuff_ids, shape)

    segments: list[Segment] = []
    id_map = np.zeros(shape, dtype=np.uint32)
    taken = np.zeros(shape, dtype=np.bool_)
    for index in things:
        window = windows[index]
        if window is None:
            continue
        cand = candidates[index]
        claim = _pixels(cand, window) & ~taken[window]
        footprint = _footprint(claim, window, rows, cols)
        if footprint is None or footprint[0] < threshold:
            continue
        seg_id = given[0][index] if given is not None else len(segments) + 1
        taken[window] |= claim
        np.copyto(id_map[window], np.uint32(seg_id), where=claim)
        segments.append(_segment(seg_id, cand, footprint, (out_w / width, out_h / height)))

    if stuff_ids:
        # Stuff under a kept thing is hidden; clear it in place (stuff_map is ours).
        np.copyto(stuff_map, 0, where=taken)
        for label, category_id in enumerate(stuff_ids, start=1):
            window = stuff_windows[label]
            if window is None:
                continue
            visible = stuff_map[window] == label
            footprint = _footprint(visible, window, rows, cols)
            if footprint is None or footprint[0] < threshold:
                continue
            seg_id = given[1][category_id] if given is not None else len(segments) + 1
            np.copyto(id_map[window], np.uint32(seg_id), where=visible)
            segments.append(
                Segment(
                    id=seg_id,
                    category_id=category_id,
                    is_thing=False,
                    score=_stuff_score(candidates, windows, category_id),
                    area=footprint[0],
                    bbox=footprint[1],
                )
            )

    if not (rows.identity and cols.identity):
        id_map = np.take(np.take(id_map, cols.source, axis=1), rows.source, axis=0)
    segments.sort(key=lambda seg: seg.id)
    return PanopticPrediction(id_map=np.ascontiguousarray(id_map), segments=tuple(segments))


@dataclass(frozen=True)
class _Axis:
    """Nearest-neighbour correspondence between working and output pixels along one axis."""

    #: For each output pixel, the working pixel it copies.
    source: npt.NDArray[np.intp]
    #: For each working pixel, how many output pixels copy it (0 when downscaling skips it).
    weight: npt.NDArray[np.intp]
    #: ``weight`` as float64, for the matrix products that weigh areas (exact below 2^53).
    weight_f: npt.NDArray[np.float64]
    #: For each working pixel, the first output pixel that copies it.
    first: npt.NDArray[np.intp]
    identity: bool
    #: Every working pixel reaches the output (true when upscaling or equal).
    covered: bool

    @classmethod
    def build(cls, n_in: int, n_out: int) -> _Axis:
        # Centre-aligned: output pixel i samples working coordinate (i + 0.5) * n_in / n_out,
        # floored; integer arithmetic keeps it exact. PIL's resize aligns centres the same way.
        source = ((2 * np.arange(n_out, dtype=np.intp) + 1) * n_in) // (2 * n_out)
        weight = np.bincount(source, minlength=n_in).astype(np.intp)
        first = np.searchsorted(source, np.arange(n_in), side="left").astype(np.intp)
        return cls(
            source=source,
            weight=weight,
            weight_f=weight.astype(np.float64),
            first=first,
            identity=n_in == n_out,
            covered=bool(weight.all()),
        )


def _window(mask: npt.NDArray[np.bool_]) -> _Window | None:
    """The smallest slice pair holding all True pixels; ``None`` for an empty mask.

    Later steps work inside it, so a small object costs a small scan, not a full-image one.
    """
    row_any = mask.any(axis=1)
    if not row_any.any():
        return None
    r0, r1 = _span(row_any)
    col_any = mask[r0 : r1 + 1].any(axis=0)
    c0, c1 = _span(col_any)
    return slice(r0, r1 + 1), slice(c0, c1 + 1)


def _frame_window(cand: MaskCandidate) -> _Window | None:
    """The tight window of a candidate's True pixels, in the frame; ``None`` when empty.

    Scans only the candidate's crop: a thing cropped by its back-end costs its own size here.
    """
    window = _window(cand.mask)
    top, left = cand.origin
    if window is None or (top, left) == (0, 0):
        return window
    rows, cols = window
    return slice(rows.start + top, rows.stop + top), slice(cols.start + left, cols.stop + left)


def _pixels(cand: MaskCandidate, window: _Window) -> npt.NDArray[np.bool_]:
    """The candidate's mask over ``window`` of the frame, which lies inside its crop."""
    top, left = cand.origin
    if (top, left) == (0, 0):
        return cand.mask[window]
    rows, cols = window
    return cand.mask[rows.start - top : rows.stop - top, cols.start - left : cols.stop - left]


def _span(present: npt.NDArray[np.bool_] | np.bool_) -> tuple[int, int]:
    """First and last True index of a non-empty-of-True 1-D array."""
    present = np.asarray(present)
    return int(np.argmax(present)), int(present.size - 1 - np.argmax(present[::-1]))


def _union(a: _Window | None, b: _Window | None) -> _Window | None:
    if a is None:
        return b
    if b is None:
        return a
    return (
        slice(min(a[0].start, b[0].start), max(a[0].stop, b[0].stop)),
        slice(min(a[1].start, b[1].start), max(a[1].stop, b[1].stop)),
    )


def _paint_stuff(
    candidates: Sequence[MaskCandidate],
    windows: Sequence[_Window | None],
    stuff_ids: Sequence[int],
    shape: tuple[int, int],
) -> tuple[npt.NDArray[np.integer], list[_Window | None]]:
    """Label map of stuff (``1..S`` = position in ``stuff_ids``, 0 = none) and each label's window.

    Parts are painted from the lowest score to the highest, so the highest-scoring part covering
    a pixel decides it; sorting (not input order) makes the result order-independent.
    """
    dtype = np.uint8 if len(stuff_ids) < 2**8 else np.uint32
    label_map = np.zeros(shape, dtype=dtype)
    label_of = {cat: label for label, cat in enumerate(stuff_ids, start=1)}
    label_windows: list[_Window | None] = [None] * (len(stuff_ids) + 1)
    parts = sorted(
        (i for i, c in enumerate(candidates) if not c.is_thing and windows[i] is not None),
        key=lambda i: (candidates[i].score, candidates[i].category_id),
    )
    for i in parts:
        window = windows[i]
        assert window is not None  # filtered above; narrows the type
        label = label_of[candidates[i].category_id]
        np.copyto(label_map[window], dtype(label), where=_pixels(candidates[i], window))
        label_windows[label] = _union(label_windows[label], window)
    return label_map, label_windows


def _stuff_score(
    candidates: Sequence[MaskCandidate], windows: Sequence[_Window | None], category_id: int
) -> float:
    """Mean score of a stuff category's parts, weighted by each part's mask area (counted in
    the part's window: all its pixels are there)."""
    parts = [i for i, c in enumerate(candidates) if not c.is_thing and c.category_id == category_id]
    areas = np.array(
        [_area(candidates[i], windows[i]) for i in parts],
        dtype=np.float64,
    )
    scores = np.array([candidates[i].score for i in parts], dtype=np.float64)
    total = areas.sum()
    return float((areas * scores).sum() / total) if total else float(scores.max())


def _area(cand: MaskCandidate, window: _Window | None) -> int:
    return 0 if window is None else int(np.count_nonzero(_pixels(cand, window)))


def _footprint(
    pixels: npt.NDArray[np.bool_], window: _Window, rows: _Axis, cols: _Axis
) -> tuple[int, tuple[int, int, int, int]] | None:
    """Area and COCO bbox, at the output size, of working ``pixels`` found at ``window``.

    ``None`` when no pixel survives the resize (possible only when downscaling).
    """
    top, left = window[0].start, window[1].start
    h, w = pixels.shape
    if rows.identity and cols.identity:
        area = int(np.count_nonzero(pixels))
    else:
        row_w, col_w = rows.weight[top : top + h], cols.weight[left : left + w]
        if not (rows.covered and cols.covered):
            # Working pixels that no output pixel copies must not count for the bbox either.
            pixels = pixels & (row_w > 0)[:, None] & (col_w > 0)[None, :]
        per_row = pixels.view(np.uint8) @ cols.weight_f[left : left + w]
        area = round(float(per_row @ rows.weight_f[top : top + h]))
    if area == 0:
        return None
    r0, r1 = _span(pixels.any(axis=1))
    c0, c1 = _span(pixels.any(axis=0))
    y0 = int(rows.first[top + r0])
    y1 = int(rows.first[top + r1] + rows.weight[top + r1])  # exclusive
    x0 = int(cols.first[left + c0])
    x1 = int(cols.first[left + c1] + cols.weight[left + c1])
    return area, (x0, y0, x1 - x0, y1 - y0)


def _segment(
    seg_id: int,
    cand: MaskCandidate,
    footprint: tuple[int, tuple[int, int, int, int]],
    scale: tuple[float, float],
) -> Segment:
    """A kept thing; its detector box (if any) scaled from the working to the output size."""
    box = None
    if cand.box is not None:
        sx, sy = scale
        x0, y0, x1, y1 = cand.box
        box = (float(x0) * sx, float(y0) * sy, float(x1) * sx, float(y1) * sy)
    return Segment(
        id=seg_id,
        category_id=cand.category_id,
        is_thing=cand.is_thing,
        score=float(cand.score),
        area=footprint[0],
        bbox=footprint[1],
        box=box,
    )
