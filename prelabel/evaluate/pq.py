"""Panoptic quality (PQ, SQ, RQ) of predictions against human labels, in pure numpy.

The definition is COCO panopticapi's ``panopticapi/evaluation.py`` (Kirillov et al., "Panoptic
Segmentation", CVPR 2019), so numbers here can be compared with published ones:

* Ground-truth pixels with id 0 (VOID, unlabeled) are ignored.
* A predicted and a ground-truth segment of the **same category** match when their IoU is
  above 0.5. IoU > 0.5 makes the matching unique, so no assignment step is needed. The union
  leaves out the predicted pixels that are VOID in the ground truth:
  ``union = pred_area + gt_area - intersection - |pred ∩ VOID|``. A prediction that spills into
  unlabeled pixels is therefore not penalised for it.
* An unmatched ground-truth segment is a false negative. An unmatched predicted segment is a
  false positive, unless more than half of its pixels are VOID in the ground truth: the person
  simply did not label that region, so the prediction cannot be judged there.
* Per category, with ``IoU_sum`` over its true positives:
  ``SQ = IoU_sum / TP`` (0 when TP = 0), ``RQ = TP / (TP + FP/2 + FN/2)``, ``PQ = SQ * RQ``.
  Counts and IoU sums are added over all images first, then divided (PQ is not a mean of
  per-image PQs).
* The overall, things and stuff values are unweighted means over the categories with
  ``TP + FP + FN > 0``. A category that never occurs on either side has ``None`` for its
  values and is left out of the means, as panopticapi does.

Where this module differs from panopticapi, and why:

* Crowd regions (``iscrowd: 1``) are not supported; Segments.ai labels have none. A crowd
  segment read from a COCO file is evaluated as an ordinary segment, with a warning.
* Segment areas are counted from the pixels on both sides; panopticapi trusts the ``area`` of
  the ground-truth JSON. A segment listed without any pixel is ignored on both sides (a
  Segments.ai label can list an annotation whose pixels were all painted over).
* A pixel id that no segment lists, or a category id the evaluation does not know, raises
  :class:`ValueError` on either side; panopticapi only checks the prediction.

Speed: one image costs one lookup table pass per side and one ``np.bincount`` over combined
``gt_index * n_pred + pred_index`` ids, never a loop over segment masks (a 1920x1080 frame with
a hundred segments takes about 30 ms).

Reading COCO-panoptic exports lives in :mod:`prelabel.evaluate.exports`, writing and printing
results in :mod:`prelabel.evaluate.results`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from prelabel.panoptic import PanopticPrediction
from prelabel.taxonomy import Category

__all__ = [
    "CategoryPQ",
    "PQAccumulator",
    "PQAverage",
    "PQResult",
    "PanopticFrame",
    "frame_from_prediction",
]

#: Ground-truth id of unlabeled pixels (panopticapi's ``VOID``).
VOID = 0
#: A match needs an IoU strictly above this; it is what makes matches unique.
MATCH_IOU = 0.5
#: An unmatched prediction with more than this share of its pixels in VOID is not a false positive.
MAX_VOID_SHARE = 0.5
#: Ids up to this are mapped with a dense lookup table (4 bytes per possible id); larger ids
#: (Segments allows 2^24 - 1) fall back to a binary search, slower but without a 64 MiB table.
_MAX_LUT_ID = 2**20
#: Largest dense (gt x pred) count matrix; beyond it the pairs are counted with np.unique.
_MAX_DENSE_PAIRS = 2**22
#: Largest id a uint32 map can hold.
_MAX_ID = 2**32 - 1
#: Sentinel category index of a segment whose category the evaluation does not know.
_UNKNOWN = -1


@dataclass(frozen=True)
class PanopticFrame:
    """One image's panoptic annotation, predicted or ground truth.

    ``id_map`` is a 2-D ``uint32`` array of segment ids; 0 is VOID (unlabeled, or nothing
    predicted). ``segments`` maps each non-zero id to its category id. Every non-zero id in the
    map must be listed (checked in :meth:`PQAccumulator.add`, where the ids are counted anyway);
    a listed id without pixels is allowed and ignored. The mapping is copied and read-only.

    Raises:
        ValueError: ``id_map`` is not a 2-D ``uint32`` array, or ``segments`` lists id 0.
    """

    id_map: npt.NDArray[np.uint32]
    segments: Mapping[int, int]

    def __post_init__(self) -> None:
        if not isinstance(self.id_map, np.ndarray) or self.id_map.dtype != np.uint32:
            kind = getattr(self.id_map, "dtype", type(self.id_map).__name__)
            raise ValueError(f"id_map must be a uint32 numpy array, got {kind}")
        if self.id_map.ndim != 2:
            raise ValueError(f"id_map must be 2-D (height, width), got shape {self.id_map.shape}")
        segments = {int(k): int(v) for k, v in self.segments.items()}
        bad = [i for i in segments if not 0 < i <= _MAX_ID]
        if bad:
            raise ValueError(
                f"segment ids must be 1..{_MAX_ID} (0 is VOID, unlabeled), got {bad[0]}"
            )
        object.__setattr__(self, "segments", MappingProxyType(segments))


def frame_from_prediction(prediction: PanopticPrediction) -> PanopticFrame:
    """The evaluation's view of a pipeline result (scores are not used by PQ)."""
    return PanopticFrame(
        id_map=prediction.id_map,
        segments={seg.id: seg.category_id for seg in prediction.segments},
    )


@dataclass(frozen=True)
class PQAverage:
    """A mean over ``n`` categories; the values are ``None`` when ``n`` is 0."""

    pq: float | None
    sq: float | None
    rq: float | None
    n: int


@dataclass(frozen=True)
class CategoryPQ:
    """One category's totals over all images; values are ``None`` if TP + FP + FN = 0."""

    category_id: int
    name: str
    is_thing: bool
    pq: float | None
    sq: float | None
    rq: float | None
    tp: int
    fp: int
    fn: int


@dataclass(frozen=True)
class PQResult:
    """What an evaluation reports: the three means, each category, and the image count."""

    overall: PQAverage
    things: PQAverage
    stuff: PQAverage
    per_category: tuple[CategoryPQ, ...]
    images: int

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (fractions in 0..1, ``None`` for undefined)."""
        return {
            "images": self.images,
            "overall": _average_dict(self.overall),
            "things": _average_dict(self.things),
            "stuff": _average_dict(self.stuff),
            "per_category": [
                {
                    "category_id": c.category_id,
                    "name": c.name,
                    "isthing": c.is_thing,
                    "pq": c.pq,
                    "sq": c.sq,
                    "rq": c.rq,
                    "tp": c.tp,
                    "fp": c.fp,
                    "fn": c.fn,
                }
                for c in self.per_category
            ],
        }


class PQAccumulator:
    """Adds up matches image by image; :meth:`result` turns the totals into PQ, SQ and RQ.

    ``categories`` are the ones evaluated; ``has_instances`` decides thing or stuff. Memory is a
    few numbers per category, so any number of images can be added.

    Raises:
        ValueError: two categories share an id.
    """

    def __init__(self, categories: Sequence[Category]) -> None:
        self._categories = tuple(categories)
        self._index: dict[int, int] = {}
        for i, cat in enumerate(self._categories):
            if cat.id in self._index:
                raise ValueError(f"category id {cat.id} is listed twice")
            self._index[cat.id] = i
        n = len(self._categories)
        self._tp = np.zeros(n, dtype=np.int64)
        self._fp = np.zeros(n, dtype=np.int64)
        self._fn = np.zeros(n, dtype=np.int64)
        self._iou = np.zeros(n, dtype=np.float64)
        self._images = 0

    @property
    def images(self) -> int:
        """How many image pairs were added."""
        return self._images

    def add(self, prediction: PanopticFrame, ground_truth: PanopticFrame) -> None:
        """Count one image's true positives, false positives and false negatives.

        Nothing is added if it raises.

        Raises:
            ValueError: the two maps differ in shape; a map holds an id its segments do not
                list; a segment with pixels has a category that is not evaluated.
        """
        if prediction.id_map.shape != ground_truth.id_map.shape:
            raise ValueError(
                f"prediction shape {prediction.id_map.shape} differs from ground truth shape "
                f"{ground_truth.id_map.shape} (height, width)"
            )
        gt = _Indexed.build(ground_truth, self._index, "ground truth")
        pred = _Indexed.build(prediction, self._index, "prediction")
        g, p, inter = _pair_counts(gt.index_map, pred.index_map, gt.size, pred.size)

        gt_area = np.bincount(g, weights=inter, minlength=gt.size).astype(np.int64)
        pred_area = np.bincount(p, weights=inter, minlength=pred.size).astype(np.int64)
        pred_void = np.bincount(p[g == 0], weights=inter[g == 0], minlength=pred.size)
        gt.check_categories(gt_area > 0, "ground truth")
        pred.check_categories(pred_area > 0, "prediction")

        pair = (g > 0) & (p > 0) & (gt.category[g] == pred.category[p])
        g, p, inter = g[pair], p[pair], inter[pair]
        union = pred_area[p] + gt_area[g] - inter - pred_void[p]
        iou = inter / union
        hit = iou > MATCH_IOU
        g, p, iou = g[hit], p[hit], iou[hit]

        n = len(self._categories)
        gt_matched = np.zeros(gt.size, dtype=np.bool_)
        gt_matched[g] = True
        pred_matched = np.zeros(pred.size, dtype=np.bool_)
        pred_matched[p] = True
        missed = (gt_area > 0) & ~gt_matched
        missed[VOID] = False
        with np.errstate(divide="ignore", invalid="ignore"):
            mostly_void = pred_void / pred_area > MAX_VOID_SHARE
        false_pos = (pred_area > 0) & ~pred_matched & ~mostly_void
        false_pos[VOID] = False

        self._tp += np.bincount(gt.category[g], minlength=n)
        self._iou += np.bincount(gt.category[g], weights=iou, minlength=n)
        self._fn += np.bincount(gt.category[missed], minlength=n)
        self._fp += np.bincount(pred.category[false_pos], minlength=n)
        self._images += 1

    def result(self) -> PQResult:
        """PQ, SQ and RQ of everything added so far (the accumulator stays usable)."""
        per_category = tuple(
            _category_pq(cat, int(tp), int(fp), int(fn), float(iou))
            for cat, tp, fp, fn, iou in zip(
                self._categories, self._tp, self._fp, self._fn, self._iou, strict=True
            )
        )
        return PQResult(
            overall=_average(per_category),
            things=_average(c for c in per_category if c.is_thing),
            stuff=_average(c for c in per_category if not c.is_thing),
            per_category=per_category,
            images=self._images,
        )


@dataclass(frozen=True)
class _Indexed:
    """A frame with its ids renumbered 1..n in ascending id order (0 stays VOID).

    ``category[i]`` is the category index of renumbered segment ``i`` (``_UNKNOWN`` for a
    category the accumulator lacks); ``size`` is n + 1.
    """

    index_map: npt.NDArray[np.int64]
    ids: npt.NDArray[np.uint32]
    category_ids: tuple[int, ...]
    category: npt.NDArray[np.int64]
    size: int

    @classmethod
    def build(cls, frame: PanopticFrame, index: Mapping[int, int], side: str) -> _Indexed:
        ids = np.array(sorted(frame.segments), dtype=np.uint32)
        category_ids = tuple(frame.segments[int(i)] for i in ids)
        category = np.array(
            [_UNKNOWN] + [index.get(c, _UNKNOWN) for c in category_ids], dtype=np.int64
        )
        index_map = _renumber(frame.id_map, ids, side)
        return cls(index_map, ids, category_ids, category, len(ids) + 1)

    def check_categories(self, present: npt.NDArray[np.bool_], side: str) -> None:
        bad = np.flatnonzero(present & (self.category == _UNKNOWN))
        bad = bad[bad > 0]
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"{side} segment {int(self.ids[i - 1])} has category id "
                f"{self.category_ids[i - 1]}, which is not among the evaluated categories"
            )


def _renumber(
    id_map: npt.NDArray[np.uint32], ids: npt.NDArray[np.uint32], side: str
) -> npt.NDArray[np.int64]:
    """Map each pixel to 1 + the position of its id in sorted ``ids``; VOID to 0.

    Raises :class:`ValueError` for a pixel id that ``ids`` lacks.
    """
    max_id = int(id_map.max(initial=0))
    if max_id <= _MAX_LUT_ID:
        lut = np.full(max_id + 1, -1, dtype=np.int64)
        lut[VOID] = 0
        in_range = ids <= max_id  # listed ids above every pixel's id have no pixels anyway
        lut[ids[in_range]] = np.arange(1, ids.size + 1)[in_range]
        out = lut[id_map]
        unknown = out < 0
    else:
        pos = np.searchsorted(ids, id_map)
        np.minimum(pos, max(ids.size - 1, 0), out=pos)
        listed = ids[pos] == id_map if ids.size else np.zeros(id_map.shape, dtype=np.bool_)
        unknown = ~listed & (id_map != VOID)
        out = np.where(listed, pos + 1, 0).astype(np.int64)
    if unknown.any():
        missing = np.unique(id_map[unknown])
        shown = ", ".join(str(int(i)) for i in missing[:10])
        more = f" and {missing.size - 10} more" if missing.size > 10 else ""
        raise ValueError(f"{side} map holds segment ids {shown}{more} that no segment lists")
    return out


def _pair_counts(
    gt_index: npt.NDArray[np.int64],
    pred_index: npt.NDArray[np.int64],
    n_gt: int,
    n_pred: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Every (gt index, pred index) pair that shares pixels, and how many it shares."""
    combined = (gt_index * n_pred + pred_index).ravel()
    if n_gt * n_pred <= _MAX_DENSE_PAIRS:
        counts = np.bincount(combined, minlength=n_gt * n_pred)
        keys = np.flatnonzero(counts)
        inter = counts[keys]
    else:
        keys, inter = np.unique(combined, return_counts=True)
    return keys // n_pred, keys % n_pred, inter.astype(np.int64)


def _category_pq(cat: Category, tp: int, fp: int, fn: int, iou: float) -> CategoryPQ:
    pq: float | None = None
    sq: float | None = None
    rq: float | None = None
    if tp + fp + fn:
        rq = tp / (tp + 0.5 * fp + 0.5 * fn)
        sq = iou / tp if tp else 0.0
        pq = iou / (tp + 0.5 * fp + 0.5 * fn)
    return CategoryPQ(
        category_id=cat.id,
        name=cat.name,
        is_thing=cat.has_instances,
        pq=pq,
        sq=sq,
        rq=rq,
        tp=tp,
        fp=fp,
        fn=fn,
    )


def _average(categories: Iterable[CategoryPQ]) -> PQAverage:
    scored = [c for c in categories if c.pq is not None]
    if not scored:
        return PQAverage(pq=None, sq=None, rq=None, n=0)
    n = len(scored)
    return PQAverage(
        pq=sum(c.pq for c in scored if c.pq is not None) / n,
        sq=sum(c.sq for c in scored if c.sq is not None) / n,
        rq=sum(c.rq for c in scored if c.rq is not None) / n,
        n=n,
    )


def _average_dict(avg: PQAverage) -> dict[str, Any]:
    return {"pq": avg.pq, "sq": avg.sq, "rq": avg.rq, "n": avg.n}
