"""Per-frame predictions -> the label of an ``image-segmentation-sequence`` sample.

A sequence label is one segmentation label per frame of the sample, index-aligned with the
sample's frames (shared/segments-api.md section 10.3). Each frame is encoded exactly like a
single image (:func:`prelabel.formats.label.encode_label`), with the prediction's segment ids
being the **track ids**: one object keeps its id in every frame, so the pixel value in each
frame's bitmap is the track id and ``id == track_id`` (section 10.6, rules 3-4).

The pieces, in the order a connector uses them:

1. :func:`encode_label` each frame's prediction (ids already mapped to stable track ids);
2. upload the PNG (a frame without objects may reuse one all-zero bitmap per frame size, see
   :func:`empty_frame_png`) and make a :class:`FrameLabel` with :func:`frame_label`;
3. :func:`sequence_label_attributes` of all frames, :func:`check_sequence_label` against the
   sample's frame count, and write :func:`sequence_label_model` of it (the SDK's typed model,
   which skips its union guessing, section 10.3).

:class:`FrameLabel` is plain, JSON-able data (:meth:`FrameLabel.as_dict`), so a run can keep the
frames it has uploaded in its resume state.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from segments.typing import ImageSequenceSegmentationLabelAttributes

from prelabel.formats.bitmap import segmentation_png
from prelabel.formats.label import EncodedLabel, label_score
from prelabel.panoptic import PanopticPrediction

__all__ = [
    "FrameLabel",
    "Timestamp",
    "check_sequence_label",
    "empty_frame_png",
    "frame_label",
    "label_bitmap_urls",
    "label_object_count",
    "pooled_score",
    "sequence_label_attributes",
    "sequence_label_model",
    "sequence_score",
]

Timestamp = str | int | float | None


@dataclass(frozen=True)
class FrameLabel:
    """One frame of a sequence label: its uploaded bitmap and its annotations.

    ``annotations`` are the frame's label annotations as sent (``id``, ``track_id``,
    ``category_id``, ``is_keyframe``); ``timestamp`` is the sample frame's, copied.
    """

    asset_url: str
    annotations: list[dict[str, Any]] = field(default_factory=list)
    timestamp: Timestamp = None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON data (for a state file); :meth:`from_dict` reads it back."""
        return {
            "asset_url": self.asset_url,
            "annotations": [dict(a) for a in self.annotations],
            "timestamp": self.timestamp,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FrameLabel:
        return cls(
            asset_url=str(data["asset_url"]),
            annotations=[dict(a) for a in data.get("annotations") or ()],
            timestamp=data.get("timestamp"),
        )


def empty_frame_png(size: tuple[int, int]) -> bytes:
    """The all-zero bitmap of a frame of ``size`` (width, height) without objects.

    The same bytes for every frame of that size: upload it once per size and reuse its URL.
    """
    width, height = size
    return segmentation_png(np.zeros((height, width), dtype=np.uint32))


def frame_label(encoded: EncodedLabel, asset_url: str, timestamp: Timestamp = None) -> FrameLabel:
    """A frame's label from its encoded prediction (ids = track ids) and its bitmap's URL.

    Every annotation is marked ``is_keyframe: true``: the model set the object's mask in this
    frame explicitly (section 10.6, rule 7).
    """
    annotations = [
        {
            "id": int(a["id"]),
            "track_id": int(a["id"]),
            "category_id": int(a["category_id"]),
            "is_keyframe": True,
        }
        for a in encoded.annotations
    ]
    return FrameLabel(asset_url=asset_url, annotations=annotations, timestamp=timestamp)


def sequence_label_attributes(frames: Sequence[FrameLabel]) -> dict[str, Any]:
    """The ``attributes`` of a sequence label: one frame per :class:`FrameLabel`, in order.

    A frame carries ``timestamp`` only when it has one (the sample frame had one).
    """
    out: list[dict[str, Any]] = []
    for frame in frames:
        entry: dict[str, Any] = {
            "format_version": "0.1",
            "annotations": [dict(a) for a in frame.annotations],
            "segmentation_bitmap": {"url": frame.asset_url},
        }
        if frame.timestamp is not None:
            entry["timestamp"] = frame.timestamp
        out.append(entry)
    return {"format_version": "0.1", "frames": out}


def sequence_label_model(
    attributes: Mapping[str, Any],
) -> ImageSequenceSegmentationLabelAttributes:
    """The SDK's typed model of sequence label attributes (raises pydantic's ValidationError)."""
    return ImageSequenceSegmentationLabelAttributes.model_validate(dict(attributes))


def check_sequence_label(attributes: Mapping[str, Any], frame_count: int) -> None:
    """Raise ``ValueError`` unless the label may be written to a sample of ``frame_count`` frames.

    Checks (section 10.6): one label frame per sample frame; in each frame, ids unique,
    ``id == track_id``, a bitmap URL whenever there are annotations; one category per track
    across the whole sequence.
    """
    frames = attributes.get("frames")
    if not isinstance(frames, list):
        raise ValueError("a sequence label needs a 'frames' list")
    if len(frames) != frame_count:
        raise ValueError(f"the label has {len(frames)} frames but the sample has {frame_count}")
    categories: dict[int, set[int]] = {}
    for index, frame in enumerate(frames):
        annotations = frame.get("annotations")
        if not isinstance(annotations, list):
            raise ValueError(f"frame {index}: 'annotations' must be a list")
        ids = [a.get("id") for a in annotations]
        repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
        if repeated:
            raise ValueError(f"frame {index}: ids {repeated} appear more than once")
        for annotation in annotations:
            if annotation.get("track_id") != annotation.get("id"):
                raise ValueError(
                    f"frame {index}: annotation id {annotation.get('id')} has track_id "
                    f"{annotation.get('track_id')}; they must be equal"
                )
            categories.setdefault(annotation["id"], set()).add(annotation.get("category_id"))
        bitmap = frame.get("segmentation_bitmap") or {}
        if annotations and not bitmap.get("url"):
            raise ValueError(f"frame {index}: has annotations but no segmentation bitmap URL")
    mixed = {t: sorted(c) for t, c in sorted(categories.items()) if len(c) > 1}
    if mixed:
        raise ValueError(f"tracks with more than one category: {mixed}")


def label_bitmap_urls(attributes: Mapping[str, Any] | None) -> tuple[str | None, ...]:
    """The bitmap URLs a label's attributes point at: one for an image label, one per frame
    for a sequence label; ``()`` for none. They identify one write of ours (assets are new)."""
    if not attributes:
        return ()
    frames = attributes.get("frames")
    holders = frames if isinstance(frames, list) else [attributes]
    return tuple((frame.get("segmentation_bitmap") or {}).get("url") for frame in holders)


def label_object_count(attributes: Mapping[str, Any]) -> int:
    """The objects a label holds: its annotations for an image label, its distinct track ids
    over all frames for a sequence label (what a run's report counts as segments)."""
    frames = attributes.get("frames")
    holders = frames if isinstance(frames, list) else [attributes]
    return len({a["id"] for frame in holders for a in frame.get("annotations") or ()})


def sequence_score(predictions: Iterable[PanopticPrediction]) -> float:
    """Area-weighted mean segment score over all frames (the per-image label score, pooled)."""
    return pooled_score((label_score(p), sum(seg.area for seg in p.segments)) for p in predictions)


def pooled_score(frames: Iterable[tuple[float, float]]) -> float:
    """The one sequence score: frames' label scores weighted by their segments' area.

    ``frames`` gives ``(score, area)`` per frame, each frame's score area-weighted already, so
    the result is the area-weighted mean segment score over all frames, the definition an
    image label uses; an empty frame weighs nothing (a plain mean of frame scores would let
    frames with nothing in them pull a confident sequence down). 0.0 when no frame has a
    segment. ``run``, ``predict --sequence`` and a resumed sequence all compute it here.
    """
    total = weighted = 0.0
    for score, area in frames:
        total += area
        weighted += area * score
    return weighted / total if total > 0 else 0.0
