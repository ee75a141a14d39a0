"""The shape checks of vector labels: ``bboxes``, ``vector`` and ``image-vector-sequence``.

**Emulator policy, not known real-API behaviour** (shared/segments-api.md 12.7: what the real
backend validates is unknown, and the SDK checks almost nothing, 12.2). A strict emulator makes
a connector's malformed labels visible in tests as the DRF 400 ``{"attributes": ["..."]}`` the
SDK surfaces as ``NetworkError``. Refused:

- a ``type`` outside ``bbox``, ``polygon``, ``polyline``, ``point``, and anything but ``bbox``
  in a ``bboxes`` dataset;
- a bbox without exactly two ordered corners, a polygon under 3 points, a polyline under 2, a
  point without exactly 1; a point that is not two finite numbers;
- a ``category_id`` the dataset does not define; an ``id`` not >= 1 or repeated in a frame;
- a ``segmentation_bitmap`` in a vector label;
- in sequences: no ``frames`` or another count than the sample's, an annotation without
  ``track_id`` or with ``track_id != id``, a track that changes category, a track with no
  keyframe.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

from prelabel.emulator.api.validation import require_object
from prelabel.emulator.wire import ApiError, field_error

VECTOR_IMAGE_TASK_TYPES = frozenset({"bboxes", "vector"})
VECTOR_SEQUENCE_TASK_TYPES = frozenset({"image-vector-sequence"})
VECTOR_TASK_TYPES = VECTOR_IMAGE_TASK_TYPES | VECTOR_SEQUENCE_TASK_TYPES

#: Per annotation type, the allowed number of points: (at least, at most).
_POINT_COUNTS: dict[str, tuple[int, int | None]] = {
    "bbox": (2, 2),
    "polygon": (3, None),
    "polyline": (2, None),
    "point": (1, 1),
}


def _invalid(message: str) -> ApiError:
    return field_error("attributes", message)


def check_vector_label(
    task_type: str, attributes: Any, sample_frames: int, category_ids: Collection[int]
) -> None:
    """Check a vector label's ``attributes`` for the dataset's task type and categories."""
    attributes = require_object(attributes, "attributes")
    allowed = ("bbox",) if task_type == "bboxes" else tuple(_POINT_COUNTS)
    if task_type not in VECTOR_SEQUENCE_TASK_TYPES:
        if "frames" in attributes:
            raise _invalid("Sequence label attributes ('frames') cannot be written here.")
        _check_frame(attributes, "", allowed, category_ids, sequence=False)
        return
    frames = attributes.get("frames")
    if not isinstance(frames, list):
        raise _invalid("'frames' must be a list.")
    if len(frames) != sample_frames:
        raise _invalid(f"Label has {len(frames)} frames but the sample has {sample_frames}.")
    tracks: dict[int, int] = {}
    keyed: set[int] = set()
    for index, frame in enumerate(frames):
        frame = require_object(frame, "attributes")
        for annotation in _check_frame(frame, f"Frame {index}: ", allowed, category_ids, True):
            track, category = annotation["track_id"], annotation["category_id"]
            if tracks.setdefault(track, category) != category:
                raise _invalid(f"Frame {index}: track {track} changes category.")
            if annotation.get("is_keyframe") is True:
                keyed.add(track)
    unkeyed = sorted(set(tracks) - keyed)
    if unkeyed:
        raise _invalid(f"Tracks {unkeyed} have no keyframe.")


def _check_frame(
    frame: dict[str, Any],
    where: str,
    allowed: tuple[str, ...],
    category_ids: Collection[int],
    sequence: bool,
) -> list[dict[str, Any]]:
    """One image's (or sequence frame's) vector label; returns its annotations."""
    if "segmentation_bitmap" in frame:
        raise _invalid(f"{where}A vector label has no 'segmentation_bitmap'.")
    annotations = frame.get("annotations")
    if not isinstance(annotations, list):
        raise _invalid(f"{where}'annotations' must be a list.")
    seen: set[int] = set()
    for annotation in annotations:
        if not isinstance(annotation, dict):
            raise _invalid(f"{where}Each annotation must be an object.")
        object_id = annotation.get("id")
        if type(object_id) is not int or object_id < 1:
            raise _invalid(f"{where}Annotation id {object_id!r} must be an integer >= 1.")
        if object_id in seen:
            raise _invalid(f"{where}Annotation id {object_id} is used twice.")
        seen.add(object_id)
        if annotation.get("category_id") not in category_ids:
            raise _invalid(
                f"{where}Annotation {object_id}: category_id "
                f"{annotation.get('category_id')!r} is not a category of this dataset."
            )
        if sequence and annotation.get("track_id") != object_id:
            raise _invalid(
                f"{where}Annotation {object_id} has track_id {annotation.get('track_id')!r};"
                " it must be present and equal to id."
            )
        _check_geometry(annotation, f"{where}Annotation {object_id}: ", allowed)
    return annotations


def _check_geometry(annotation: dict[str, Any], where: str, allowed: tuple[str, ...]) -> None:
    kind, points = annotation.get("type"), annotation.get("points")
    if kind not in allowed:
        raise _invalid(f"{where}type {kind!r} is not one of {', '.join(allowed)}.")
    if not isinstance(points, list) or not all(_is_point(p) for p in points):
        raise _invalid(f"{where}'points' must be a list of [x, y] pairs of finite numbers.")
    least, most = _POINT_COUNTS[kind]
    if len(points) < least or (most is not None and len(points) > most):
        wanted = f"exactly {least}" if least == most else f"at least {least}"
        raise _invalid(f"{where}a {kind} needs {wanted} points, got {len(points)}.")
    if kind == "bbox" and (points[0][0] > points[1][0] or points[0][1] > points[1][1]):
        raise _invalid(f"{where}a bbox goes from its upper-left to its lower-right corner.")


def _is_point(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        )
    )
