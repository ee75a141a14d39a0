"""PanopticPrediction -> the label of a ``bboxes`` or ``vector`` dataset (boxes, polygons).

The label JSON is shared/segments-api.md section 12.2: ``{"format_version": "0.1",
"annotations": [{"id", "category_id", "type", "points", "attributes"?}, ...]}`` with points in
pixels of the EXIF-rotated image (the image the pipeline saw), origin at the top-left corner of
the top-left pixel. There is no bitmap: the whole label travels in one write.

- ``bbox``: exactly two corners, upper-left then lower-right (``x0 <= x1``, ``y0 <= y1``),
  inside ``[0, W] x [0, H]``. One per thing; stuff (sky, road) gets no box.
- ``polygon``: one ring, the first point not repeated, at least 3 points. A thing whose mask
  falls apart gets one polygon per connected part (each its own annotation, as Segments' own
  tools do), parts under ``min_area`` pixels are dropped, and the outline is simplified
  (Douglas-Peucker, ``tolerance`` pixels). **Holes cannot be represented** (the format has one
  ring per polygon): a part's holes are filled, so a donut becomes a disc.

Outlines are traced on pixel *edges* (marching squares between pixel centres, shifted half a
pixel), so a filled rectangle of pixels ``x0..x1-1`` comes back as the polygon and box with
corners at ``x0`` and ``x1``, like the mask's COCO box.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from segments.typing import ImageSequenceVectorLabelAttributes, ImageVectorLabelAttributes
from skimage.measure import approximate_polygon, find_contours

from prelabel.config import VectorSettings
from prelabel.formats.label import label_score
from prelabel.formats.sequence_label import Timestamp, sequence_label_model
from prelabel.panoptic import PanopticPrediction, Segment

__all__ = [
    "VECTOR_KINDS",
    "EncodedVectorLabel",
    "encode_vector_label",
    "mask_polygons",
    "score_categories",
    "scored_shapes",
    "segment_box",
    "segment_shapes",
    "typed_label_attributes",
    "vector_frame",
    "vector_label_key",
    "vector_sequence_attributes",
]

#: Task type -> the annotation type its labels hold.
VECTOR_KINDS: Mapping[str, str] = {"bboxes": "bbox", "vector": "polygon"}

Point = list[float]

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class EncodedVectorLabel:
    """A vector label ready to write: its attributes, its label score, its object count."""

    attributes: dict[str, Any]
    score: float
    #: Annotations written (a thing split into parts counts once per part).
    objects: int


def encode_vector_label(
    prediction: PanopticPrediction,
    kind: str,
    settings: VectorSettings,
    *,
    scored_categories: frozenset[int] = frozenset(),
    shapes: Sequence[tuple[Segment, list[Point]]] | None = None,
) -> EncodedVectorLabel:
    """The label of one image for annotation type ``kind`` (``"bbox"`` or ``"polygon"``).

    ``scored_categories`` are the category ids that declare ``settings.score_attribute`` as a
    ``number`` attribute (:func:`score_categories`); their annotations carry the segment's
    score there. The label score is the bitmap label's (:func:`label_score`). ``shapes`` are
    :func:`segment_shapes`' answer when the caller already has it (annotation ``i + 1`` is
    shape ``i``), so a caller that also draws or exports them traces each outline once.
    """
    if kind not in VECTOR_KINDS.values():
        raise ValueError(f"unknown annotation type {kind!r}; expected bbox or polygon")
    if shapes is None:
        shapes = segment_shapes(prediction, kind, settings)
    annotations: list[dict[str, Any]] = []
    for seg, points in shapes:
        annotation: dict[str, Any] = {
            "id": len(annotations) + 1,
            "category_id": seg.category_id,
            "type": kind,
            "points": points,
        }
        if settings.score_attribute and seg.category_id in scored_categories:
            annotation["attributes"] = {settings.score_attribute: round(seg.score, 4)}
        annotations.append(annotation)
    attributes = {"format_version": "0.1", "annotations": annotations}
    return EncodedVectorLabel(attributes, label_score(prediction), len(annotations))


def segment_shapes(
    prediction: PanopticPrediction, kind: str, settings: VectorSettings
) -> list[tuple[Segment, list[Point]]]:
    """Every shape a label of ``kind`` holds, in the label's annotation order (segments by id,
    a segment's parts largest first), each with the segment it came from."""
    if kind not in VECTOR_KINDS.values():
        raise ValueError(f"unknown annotation type {kind!r}; expected bbox or polygon")
    return [
        (seg, points)
        for seg in sorted(prediction.segments, key=lambda s: s.id)
        for points in _shapes(prediction, seg, kind, settings)
    ]


def vector_frame(
    prediction: PanopticPrediction,
    kind: str,
    settings: VectorSettings,
    *,
    scored_categories: frozenset[int] = frozenset(),
    timestamp: Timestamp = None,
) -> dict[str, Any]:
    """One frame of an ``image-vector-sequence`` label (shared/segments-api.md 12.3).

    Segment ids are track ids (:class:`~prelabel.panoptic.FramePrediction`), so each
    annotation's ``id`` and ``track_id`` are its segment's id. A track has at most one shape
    per frame: a polygon keeps the mask's largest part only. Every shape is marked
    ``is_keyframe``: the model produced it, and a non-keyframe shape is the editor's to
    interpolate (12.3 rule 5). ``timestamp`` is the sample frame's, copied when it has one.
    """
    annotations: list[dict[str, Any]] = []
    for seg in sorted(prediction.segments, key=lambda s: s.id):
        for points in _shapes(prediction, seg, kind, settings)[:1]:
            annotation: dict[str, Any] = {
                "id": seg.id,
                "track_id": seg.id,
                "category_id": seg.category_id,
                "is_keyframe": True,
                "type": kind,
                "points": points,
            }
            if settings.score_attribute and seg.category_id in scored_categories:
                annotation["attributes"] = {settings.score_attribute: round(seg.score, 4)}
            annotations.append(annotation)
    frame: dict[str, Any] = {"format_version": "0.1", "annotations": annotations}
    if timestamp is not None:
        frame["timestamp"] = timestamp
    return frame


def vector_sequence_attributes(frames: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The label attributes of a sequence from its frames (:func:`vector_frame`), in order."""
    return {"format_version": "0.2", "frames": list(frames)}


def scored_shapes(
    prediction: PanopticPrediction, kind: str, settings: VectorSettings
) -> list[tuple[dict[str, Any], float]]:
    """Every shape a label of ``kind`` would hold, with its segment's score (what an
    evaluation ranks detections by; the label itself has no per-object score)."""
    return [
        ({"category_id": seg.category_id, "type": kind, "points": points}, seg.score)
        for seg in sorted(prediction.segments, key=lambda s: s.id)
        for points in _shapes(prediction, seg, kind, settings)
    ]


def _shapes(
    prediction: PanopticPrediction, seg: Segment, kind: str, settings: VectorSettings
) -> list[list[Point]]:
    """A segment's shapes, largest first: its box (things only), or its polygons (things,
    and stuff unless ``stuff: skip``)."""
    if kind == "bbox":
        return [segment_box(seg, prediction.size, settings)] if seg.is_thing else []
    if seg.is_thing or settings.stuff == "polygons":
        return _segment_polygons(prediction, seg, settings)
    return []


def segment_box(seg: Segment, size: tuple[int, int], settings: VectorSettings) -> list[Point]:
    """``[[x0, y0], [x1, y1]]``: the detector's box with ``box_source: detector`` where the
    back-end gave one, else the tight box of the segment's pixels; normalised and clamped to
    the image ``size`` (width, height)."""
    if settings.box_source == "detector" and seg.box is not None:
        x0, y0, x1, y1 = seg.box
    else:
        x, y, w, h = seg.bbox
        x0, y0, x1, y1 = x, y, x + w, y + h
    width, height = size
    xs = sorted(min(max(float(v), 0.0), float(width)) for v in (x0, x1))
    ys = sorted(min(max(float(v), 0.0), float(height)) for v in (y0, y1))
    return [[xs[0], ys[0]], [xs[1], ys[1]]]


def _segment_polygons(
    prediction: PanopticPrediction, seg: Segment, settings: VectorSettings
) -> list[list[Point]]:
    """The polygons of one segment, found in its box only (not the whole image per segment)."""
    x, y, w, h = seg.bbox
    window = prediction.id_map[y : y + h, x : x + w] == seg.id
    return mask_polygons(
        window, min_area=settings.min_area, tolerance=settings.tolerance, offset=(x, y)
    )


def mask_polygons(
    mask: npt.NDArray[np.bool_],
    *,
    min_area: int,
    tolerance: float,
    offset: tuple[int, int] = (0, 0),
) -> list[list[Point]]:
    """One simplified outer ring per 8-connected part of ``mask`` with ``min_area`` pixels or
    more, largest part first; holes filled. Points are ``[x, y]`` on pixel edges, shifted by
    ``offset`` (the mask's top-left corner in the image); rings with fewer than 3 points after
    simplification are dropped."""
    labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if count == 0:
        return []
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    polygons: list[tuple[int, list[Point]]] = []
    for index, window in enumerate(ndimage.find_objects(labels), start=1):
        if window is None or areas[index] < min_area:
            continue
        part = ndimage.binary_fill_holes(labels[window] == index)
        ring = _outer_ring(part, tolerance)
        if len(ring) < 3:
            continue
        dx, dy = offset[0] + window[1].start, offset[1] + window[0].start
        polygons.append((int(areas[index]), [[float(px + dx), float(py + dy)] for px, py in ring]))
    polygons.sort(key=lambda item: -item[0])
    return [points for _, points in polygons]


def _outer_ring(part: npt.NDArray[np.bool_], tolerance: float) -> list[tuple[float, float]]:
    """The outline of one filled, connected part as ``(x, y)`` on pixel edges, simplified.

    ``find_contours`` walks the 0.5 level between pixel centres (``fully_connected="high"``
    keeps diagonal neighbours together, as the 8-connected labeling did); the padding closes
    outlines at the window's border, and the half-pixel shift moves them onto pixel edges.
    """
    padded = np.pad(part.astype(np.float32), 1)
    contours = find_contours(padded, 0.5, fully_connected="high")
    if not contours:
        return []
    longest = max(contours, key=len)
    simplified = approximate_polygon(longest, tolerance=tolerance) if tolerance > 0 else longest
    if len(simplified) > 1 and np.array_equal(simplified[0], simplified[-1]):
        simplified = simplified[:-1]
    # rows/cols of the padded window -> x/y of the unpadded one, on pixel edges.
    return [(float(c) - 0.5, float(r) - 0.5) for r, c in simplified]


def score_categories(task_attributes: Mapping[str, Any], attribute: str | None) -> frozenset[int]:
    """The category ids whose object attributes declare ``attribute`` as a ``number``: only
    these may receive the per-object score (shared/segments-api.md 12.1)."""
    if not attribute:
        return frozenset()
    found: set[int] = set()
    for category in task_attributes.get("categories") or ():
        for definition in category.get("attributes") or ():
            if definition.get("name") == attribute and definition.get("input_type") == "number":
                found.add(int(category["id"]))
    return frozenset(found)


def vector_label_key(attributes: Mapping[str, Any] | None) -> tuple[Any, ...] | None:
    """What identifies a vector label's content: every annotation's id, category, type and
    points (rounded), per frame for a sequence; ``None`` for a label without geometry.

    A vector label has no new asset URL to recognise our own write by (a bitmap label does),
    so a write whose answer was lost is recognised by its content instead.
    """
    if not attributes:
        return None
    frames = attributes.get("frames")
    holders: Iterable[Mapping[str, Any]] = frames if isinstance(frames, list) else [attributes]
    key: list[Any] = []
    for frame in holders:
        annotations = frame.get("annotations") or []
        if frame.get("segmentation_bitmap") or any(a.get("points") is None for a in annotations):
            return None
        key.append(tuple(_annotation_key(a) for a in annotations))
    return tuple(key)


def _annotation_key(annotation: Mapping[str, Any]) -> tuple[Any, ...]:
    points = annotation.get("points") or ()
    return (
        annotation.get("id"),
        annotation.get("category_id"),
        str(annotation.get("type")),
        tuple(tuple(round(float(v), 3) for v in point) for point in points),
    )


def typed_label_attributes(attributes: Mapping[str, Any]) -> Any:
    """Label attributes as the SDK's typed model where one fits, so that the SDK does not guess
    among its label models from the JSON's shape (shared/segments-api.md 12.4, 10.3): a box or
    polygon label as the vector model (image or sequence), a bitmap sequence as the
    segmentation-sequence model; a bitmap image label stays a dict. Raises pydantic's
    ValidationError for attributes that fit no model."""
    if vector_label_key(attributes) is not None:
        if "frames" in attributes:
            return ImageSequenceVectorLabelAttributes.model_validate(dict(attributes))
        return ImageVectorLabelAttributes.model_validate(dict(attributes))
    if "frames" in attributes:
        return sequence_label_model(attributes)
    return dict(attributes)
