"""The shape checks of sample and label ``attributes``, per task type.

Segmentation-bitmap labels are checked as the real server does (spec section 5). For
``image-segmentation-sequence`` datasets the checks are **emulator policy, not known real-API
behaviour** (spec section 10.7: what the real backend validates is unknown): they make a
connector's mistakes visible in tests as the DRF 400 ``{"attributes": ["..."]}`` a strict
server would answer. Refused: a sequence label without ``frames``, with another frame count
than the sample, with an id twice in a frame, with ``track_id != id``, or with a frame that has
annotations but no bitmap URL; single-image attributes (sample or label) on a sequence dataset,
and sequence attributes on an image dataset. Vector labels: :mod:`.vector_shapes`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from prelabel.emulator.api.validation import require_object
from prelabel.emulator.api.vector_shapes import (
    VECTOR_IMAGE_TASK_TYPES,
    VECTOR_SEQUENCE_TASK_TYPES,
    VECTOR_TASK_TYPES,
    check_vector_label,
)
from prelabel.emulator.wire import ApiError, field_error

BITMAP_TASK_TYPES = frozenset({"segmentation-bitmap", "segmentation-bitmap-highres"})
SEQUENCE_TASK_TYPES = frozenset({"image-segmentation-sequence"}) | VECTOR_SEQUENCE_TASK_TYPES
#: Image datasets whose samples must not hold ``frames``.
IMAGE_TASK_TYPES = BITMAP_TASK_TYPES | VECTOR_IMAGE_TASK_TYPES

_MAX_ID = 2**24


def _invalid(message: str) -> ApiError:
    return field_error("attributes", message)


def check_sample_attributes(task_type: str, attributes: dict[str, Any]) -> None:
    """Sequence datasets take ``{"frames": [{"image": {...}}, ...]}``; image datasets no frames."""
    if task_type in SEQUENCE_TASK_TYPES:
        frames = attributes.get("frames")
        if frames is None and "image" in attributes:
            raise _invalid("Single-image attributes cannot be added to a sequence dataset.")
        if not isinstance(frames, list):
            raise _invalid("'frames' must be a list.")
        for index, frame in enumerate(frames):
            if not isinstance(frame, dict) or not isinstance(frame.get("image"), dict):
                raise _invalid(f"Frame {index} must be an object with an 'image'.")
    elif task_type in IMAGE_TASK_TYPES and "frames" in attributes:
        raise _invalid("Sequence attributes ('frames') cannot be added to an image dataset.")


def frame_count(attributes: dict[str, Any]) -> int:
    """How many frames a stored sample has (0 for an image sample)."""
    frames = attributes.get("frames")
    return len(frames) if isinstance(frames, list) else 0


def check_label_attributes(
    task_type: str, attributes: Any, sample_frames: int, category_ids: Collection[int] = ()
) -> None:
    """Check a written label's ``attributes`` for the dataset's task type (vector labels also
    against the dataset's ``category_ids``: :mod:`.vector_shapes`)."""
    if task_type in VECTOR_TASK_TYPES:
        check_vector_label(task_type, attributes, sample_frames, category_ids)
    elif task_type in SEQUENCE_TASK_TYPES:
        _check_sequence_label(attributes, sample_frames)
    elif task_type in BITMAP_TASK_TYPES:
        attributes = require_object(attributes, "attributes")
        if "frames" in attributes:
            raise _invalid("Sequence label attributes ('frames') cannot be written here.")
        _check_segmentation(attributes, where="", sequence=False)
    else:
        require_object(attributes, "attributes")


def _check_sequence_label(attributes: Any, sample_frames: int) -> None:
    attributes = require_object(attributes, "attributes")
    frames = attributes.get("frames")
    if frames is None:
        if "annotations" in attributes or "segmentation_bitmap" in attributes:
            raise _invalid("Single-image label attributes cannot be written to a sequence.")
        raise _invalid("'frames' is required.")
    if not isinstance(frames, list):
        raise _invalid("'frames' must be a list.")
    if len(frames) != sample_frames:
        raise _invalid(f"Label has {len(frames)} frames but the sample has {sample_frames}.")
    for index, frame in enumerate(frames):
        frame = require_object(frame, "attributes")
        _check_segmentation(frame, where=f"Frame {index}: ", sequence=True)


def _check_segmentation(attributes: dict[str, Any], *, where: str, sequence: bool) -> None:
    """One segmentation label (an image's, or a sequence frame's) (spec sections 5, 10.3)."""
    annotations = attributes.get("annotations")
    if not isinstance(annotations, list):
        raise _invalid(f"{where}'annotations' must be a list.")
    seen: set[int] = set()
    for annotation in annotations:
        if not isinstance(annotation, dict):
            raise _invalid(f"{where}Each annotation must be an object.")
        object_id, category_id = annotation.get("id"), annotation.get("category_id")
        if type(object_id) is not int or not 0 < object_id < _MAX_ID:
            raise _invalid(f"{where}Annotation id {object_id!r} must be in 1..2^24-1.")
        if type(category_id) is not int:
            raise _invalid(f"{where}Annotation category_id {category_id!r} is invalid.")
        if object_id in seen:
            raise _invalid(f"{where}Annotation id {object_id} is used twice.")
        if sequence and annotation.get("track_id") != object_id:
            raise _invalid(
                f"{where}Annotation id {object_id} has track_id {annotation.get('track_id')!r};"
                " they must be equal."
            )
        seen.add(object_id)
    bitmap = attributes.get("segmentation_bitmap")
    has_url = isinstance(bitmap, dict) and isinstance(bitmap.get("url"), str)
    if not has_url and (annotations or not sequence):
        raise _invalid(f"{where}'segmentation_bitmap' must be an object with a 'url'.")
