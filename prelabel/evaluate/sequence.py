"""Evaluation of image sequences: PQ frame by frame, and STQ for tracking.

**Per-frame PQ.** Each frame is scored with :class:`prelabel.evaluate.pq.PQAccumulator` (COCO
panopticapi's PQ); :attr:`SequenceResult.frame_pq` lists each frame's overall PQ and
:attr:`SequenceResult.mean_frame_pq` averages them over the frames where PQ is defined.
:attr:`SequenceResult.pq` pools all frames as one PQ evaluation. PQ never sees track ids: a
prediction that swaps two objects' ids between frames scores as well as a perfect one.

**Tracking: STQ** (Segmentation and Tracking Quality, Weber et al., "STEP: Segmenting and
Tracking Every Pixel", NeurIPS 2021 datasets track), as in deeplab2's ``STQuality``:

* ``SQ`` is the semantic mean IoU over the whole sequence: per category
  ``TP / (TP + FP + FN)`` over all pixels of all frames that are labeled in the ground truth
  (id 0 = VOID is ignored; a pixel the prediction leaves at 0 counts as missed), averaged over
  the categories with a non-empty union.
* ``AQ`` is the association quality of the thing tracks (categories with ``has_instances``),
  without class matching: for each ground-truth track ``g`` (its pixels in all frames) and
  each predicted track ``p`` that overlaps it,
  ``AQ(g) = 1/|g| * sum_p TPA(p, g) * IoU(p, g)`` with ``TPA = |p ∩ g|`` and the tube
  ``IoU = TPA / (|p| + |g| - TPA)``; ``|p|`` counts the predicted track's pixels on labeled
  ground truth. ``AQ`` is the mean of ``AQ(g)`` over all ground-truth tracks (pooled over the
  sequences added).
* ``STQ = sqrt(AQ * SQ)``.

Why STQ and not VPQ (video panoptic quality, Kim et al. 2020): VPQ depends on a choice of
temporal windows and keeps PQ's hard IoU > 0.5 match, so one ID switch can flip a whole tube
from a true positive to a false positive and a false negative, or not count at all outside the
windows; STQ has no parameters, gives partial credit by overlap, and separates the two failure
kinds: an ID switch lowers ``AQ`` only, a wrong mask lowers ``SQ`` (and ``AQ`` when it is a
thing's). That separation is what a pre-label reviewer needs to know: fix masks, or fix tracks.

Inputs are plain numpy: one :class:`~prelabel.evaluate.pq.PanopticFrame` per frame on each
side, whose ids are the **track ids** (a Segments sequence label's ``id == track_id``, spec
10.6), so an id that recurs in two frames is one track. :func:`ground_truth_id_map` reads a
frame of a person's sequence label from Segments.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from prelabel.evaluate.pq import VOID, PanopticFrame, PQAccumulator, PQResult
from prelabel.formats.bitmap import decode_bitmap
from prelabel.segments.client import SegmentsApi
from prelabel.taxonomy import Category

__all__ = ["STQAccumulator", "SequenceResult", "evaluate_sequence", "ground_truth_id_map"]


@dataclass(frozen=True)
class SequenceResult:
    """What a sequence evaluation reports; values are ``None`` where undefined."""

    stq: float | None
    aq: float | None
    sq: float | None
    #: Overall PQ of each frame, in order (``None`` for a frame with nothing on either side).
    frame_pq: tuple[float | None, ...]
    mean_frame_pq: float | None
    #: PQ of all frames pooled.
    pq: PQResult
    #: Ground-truth thing tracks AQ averages over.
    tracks: int


class STQAccumulator:
    """Adds sequences frame by frame; :meth:`result` gives STQ, AQ, SQ and the PQs.

    Several sequences may be added (:meth:`end_sequence` between them): SQ and PQ pool their
    pixels, AQ averages over all their ground-truth tracks. Track ids are only compared within
    a sequence.
    """

    def __init__(self, categories: Sequence[Category]) -> None:
        self._categories = tuple(categories)
        self._things = {c.id for c in self._categories if c.has_instances}
        self._pq = PQAccumulator(self._categories)
        self._frame_pq: list[float | None] = []
        self._confusion: Counter[tuple[int, int]] = Counter()
        self._aq_sum = 0.0
        self._tracks = 0
        self._gt_area: Counter[int] = Counter()
        self._pred_area: Counter[int] = Counter()
        self._overlap: Counter[tuple[int, int]] = Counter()

    def add_frame(self, prediction: PanopticFrame, ground_truth: PanopticFrame) -> None:
        """Count one frame of the current sequence (see :meth:`PQAccumulator.add` for errors)."""
        single = PQAccumulator(self._categories)
        single.add(prediction, ground_truth)
        self._pq.add(prediction, ground_truth)
        self._frame_pq.append(single.result().overall.pq)
        labeled = ground_truth.id_map != VOID
        gt_ids = ground_truth.id_map[labeled]
        pred_ids = prediction.id_map[labeled]
        gt_cat = _lookup(gt_ids, ground_truth.segments)
        pred_cat = _lookup(pred_ids, prediction.segments)
        self._confusion.update(_pair_counts(gt_cat, pred_cat))
        gt_thing = np.isin(gt_cat, list(self._things))
        pred_thing = np.isin(pred_cat, list(self._things))
        self._gt_area.update(_counts(gt_ids[gt_thing]))
        self._pred_area.update(_counts(pred_ids[pred_thing]))
        both = gt_thing & pred_thing
        self._overlap.update(_pair_counts(gt_ids[both], pred_ids[both]))

    def add_sequence(
        self, predictions: Sequence[PanopticFrame], ground_truth: Sequence[PanopticFrame]
    ) -> None:
        """Add a whole sequence (same number of frames on both sides) and end it."""
        if len(predictions) != len(ground_truth):
            raise ValueError(
                f"{len(predictions)} predicted frames for {len(ground_truth)} ground-truth frames"
            )
        for prediction, truth in zip(predictions, ground_truth, strict=True):
            self.add_frame(prediction, truth)
        self.end_sequence()

    def end_sequence(self) -> None:
        """Close the current sequence's tracks: later frames start new tracks."""
        for (g, p), tpa in self._overlap.items():
            iou = tpa / (self._pred_area[p] + self._gt_area[g] - tpa)
            self._aq_sum += tpa * iou / self._gt_area[g]
        self._tracks += len(self._gt_area)
        self._gt_area, self._pred_area, self._overlap = Counter(), Counter(), Counter()

    def result(self) -> SequenceResult:
        """The scores of everything added; call :meth:`end_sequence` first (or add_sequence)."""
        if self._gt_area:
            raise ValueError("the current sequence is not ended: call end_sequence() first")
        aq = self._aq_sum / self._tracks if self._tracks else None
        sq = _mean_iou(self._confusion)
        stq = math.sqrt(aq * sq) if aq is not None and sq is not None else None
        defined = [v for v in self._frame_pq if v is not None]
        return SequenceResult(
            stq=stq,
            aq=aq,
            sq=sq,
            frame_pq=tuple(self._frame_pq),
            mean_frame_pq=sum(defined) / len(defined) if defined else None,
            pq=self._pq.result(),
            tracks=self._tracks,
        )


def evaluate_sequence(
    predictions: Sequence[PanopticFrame],
    ground_truth: Sequence[PanopticFrame],
    categories: Sequence[Category],
) -> SequenceResult:
    """Score one sequence: per-frame PQ and STQ (see the module docstring)."""
    accumulator = STQAccumulator(categories)
    accumulator.add_sequence(predictions, ground_truth)
    return accumulator.result()


def ground_truth_id_map(
    api: SegmentsApi, bitmap_url: str | None, size: tuple[int, int]
) -> npt.NDArray[np.uint32]:
    """One frame of a person's sequence label as an id map of ``size`` (width, height), read
    with :meth:`SegmentsApi.download` (timeouts, size limit); a frame without a bitmap is all
    VOID. Frame by frame, so a long sequence is never held whole.

    Raises:
        ValueError: the bitmap is not an RGBA PNG of the frame's size.
        RemoteError: reading the bitmap failed.
    """
    if bitmap_url is None:
        width, height = size
        return np.zeros((height, width), dtype=np.uint32)
    return decode_bitmap(api.download(bitmap_url), size)


def _lookup(ids: npt.NDArray[np.uint32], segments: Mapping[int, int]) -> npt.NDArray[np.int64]:
    """The category of each id (0 for id 0, nothing predicted); unknown ids were refused by
    the PQ pass already."""
    unique, inverse = np.unique(ids, return_inverse=True)
    table = np.array([segments.get(int(i), 0) for i in unique], dtype=np.int64)
    return table[inverse.reshape(-1)] if len(unique) else np.zeros(0, np.int64)


def _counts(ids: npt.NDArray[np.integer]) -> dict[int, int]:
    unique, counts = np.unique(ids, return_counts=True)
    return {int(i): int(n) for i, n in zip(unique, counts, strict=True)}


def _pair_counts(
    first: npt.NDArray[np.integer], second: npt.NDArray[np.integer]
) -> dict[tuple[int, int], int]:
    if first.size == 0:
        return {}
    pairs, counts = np.unique(np.stack([first, second]), axis=1, return_counts=True)
    return {(int(a), int(b)): int(n) for (a, b), n in zip(pairs.T, counts, strict=True)}


def _mean_iou(confusion: Mapping[tuple[int, int], int]) -> float | None:
    """Mean over categories (0 = nothing predicted is not one) of TP / (TP + FP + FN)."""
    tp: Counter[int] = Counter()
    union: Counter[int] = Counter()
    for (gt, pred), n in confusion.items():
        if gt == pred:
            tp[gt] += n
            union[gt] += n
        else:
            union[gt] += n
            if pred != 0:
                union[pred] += n
    ious = [tp[c] / union[c] for c in union if c != 0 and union[c] > 0]
    return sum(ious) / len(ious) if ious else None
