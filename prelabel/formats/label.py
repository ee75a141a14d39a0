"""PanopticPrediction -> the pieces of a Segments.ai ``segmentation-bitmap`` label.

A label is an RGBA PNG of object ids (:mod:`prelabel.formats.bitmap`), plus one annotation
``{"id", "category_id"}`` per id (shared/segments-api.md section 5), plus a score. We add the
checks the SDK's ``bitmap2file`` lacks (it silently truncates ids >= 2^24, for instance).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from prelabel.formats.bitmap import segmentation_png
from prelabel.panoptic import MAX_SEGMENT_ID, PanopticPrediction

__all__ = [
    "EncodedLabel",
    "check_prediction",
    "encode_label",
    "label_attributes",
    "label_score",
]

#: Largest id for which the presence check uses a bincount table instead of a sort.
_BINCOUNT_LIMIT = 1 << 20


@dataclass(frozen=True)
class EncodedLabel:
    """Everything an upload needs except the asset URL, which only the upload knows."""

    #: RGBA PNG, pixel for pixel what ``segments.utils.bitmap2file`` makes.
    png: bytes
    #: ``[{"id": ..., "category_id": ...}, ...]`` sorted by id.
    annotations: list[dict[str, int]]
    #: See :func:`label_score`.
    score: float
    #: Pixels covered by segments: the weight of this score when frames' scores are pooled
    #: (:func:`prelabel.formats.sequence_label.pooled_score`).
    area: int = 0


def encode_label(prediction: PanopticPrediction) -> EncodedLabel:
    """Encode a prediction as a Segments bitmap PNG, its annotation list and its label score.

    Raises:
        ValueError: the prediction breaks its contract (see :func:`check_prediction`); encoding
            it anyway would upload a label whose pixels and annotations disagree.
    """
    check_prediction(prediction)
    annotations = [
        {"id": seg.id, "category_id": seg.category_id}
        for seg in sorted(prediction.segments, key=lambda s: s.id)
    ]
    return EncodedLabel(
        png=segmentation_png(prediction.id_map),
        annotations=annotations,
        score=label_score(prediction),
        area=sum(seg.area for seg in prediction.segments),
    )


def label_attributes(annotations: Sequence[Mapping[str, int]], bitmap_url: str) -> dict[str, Any]:
    """The ``attributes`` of a segmentation-bitmap label, given the uploaded PNG's URL.

    The annotation dicts are copied, so the result can be changed without touching the input.
    """
    return {
        "format_version": "0.1",
        "annotations": [dict(a) for a in annotations],
        "segmentation_bitmap": {"url": bitmap_url},
    }


def label_score(prediction: PanopticPrediction) -> float:
    """Mean of the segment scores weighted by segment area; 0.0 when there are no segments.

    The platform stores one float per label and reviewers sort by it. Weighting by area makes a
    label score high only when most of what it labels is confident: a big unsure segment pulls
    it down more than a tiny one, and unassigned pixels do not count either way.
    """
    total = sum(seg.area for seg in prediction.segments)
    if total <= 0:
        return 0.0
    return float(sum(seg.area * seg.score for seg in prediction.segments) / total)


def check_prediction(prediction: PanopticPrediction) -> None:
    """Raise ``ValueError`` unless the prediction can be encoded as a Segments bitmap.

    Checks: ``id_map`` is a non-empty 2-D ``uint32`` array; segment ids are unique and in
    ``1..MAX_SEGMENT_ID``; the set of non-zero ids in the map equals the set of segment ids.
    The messages name the offending ids so a pipeline bug is quick to find.
    """
    id_map = prediction.id_map
    if not isinstance(id_map, np.ndarray):
        raise ValueError(f"id_map must be a numpy array, got {type(id_map).__name__}")
    if id_map.ndim != 2 or id_map.dtype != np.uint32:
        raise ValueError(f"id_map must be a 2-D uint32 array, got {id_map.ndim}-D {id_map.dtype}")
    if id_map.size == 0:
        raise ValueError(f"id_map is empty (shape {id_map.shape})")
    seg_ids = [seg.id for seg in prediction.segments]
    dupes = sorted(i for i, n in Counter(seg_ids).items() if n > 1)
    if dupes:
        raise ValueError(f"segment ids are not unique: {_preview(dupes)} appear more than once")
    bad = sorted(i for i in seg_ids if not 1 <= i <= MAX_SEGMENT_ID)
    if bad:
        raise ValueError(f"segment ids must be in 1..{MAX_SEGMENT_ID}, got {_preview(bad)}")
    max_id = int(id_map.max())
    if max_id > MAX_SEGMENT_ID:
        raise ValueError(
            f"id_map holds id {max_id} > {MAX_SEGMENT_ID}; a Segments bitmap stores 24 bits"
        )
    present = _present_ids(id_map, max_id)
    expected = set(seg_ids)
    unlisted = sorted(present - expected)
    missing = sorted(expected - present)
    if unlisted or missing:
        parts = []
        if unlisted:
            parts.append(f"ids in the map without a segment: {_preview(unlisted)}")
        if missing:
            parts.append(f"segments with no pixel in the map: {_preview(missing)}")
        raise ValueError("id_map and segments disagree: " + "; ".join(parts))


def _present_ids(id_map: np.ndarray, max_id: int) -> set[int]:
    """Non-zero ids in the map; bincount (one pass) when ids are small, else a sort."""
    if max_id <= _BINCOUNT_LIMIT:
        counts = np.bincount(id_map.ravel(), minlength=max_id + 1)
        ids = np.flatnonzero(counts)
    else:
        ids = np.unique(id_map)
    return {int(i) for i in ids if i != 0}


def _preview(ids: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(map(str, ids[:limit]))
    return f"[{shown}{', ...' if len(ids) > limit else ''}] ({len(ids)} in all)"
