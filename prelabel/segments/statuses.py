"""Label statuses and task types as the Segments.ai API names them, and what they mean to us.

A label is ours to write only while nobody has touched it: no label, or (when redoing
pre-labels) one still ``PRELABELED``. Every other status means a person has worked on it.
"""

from __future__ import annotations

#: The status prelabel writes; the only existing status it may ever write over.
PRELABELED = "PRELABELED"

#: Statuses meaning a person finished the label: evaluation scores against these only.
HUMAN_LABEL_STATUSES = frozenset({"LABELED", "REVIEWED", "VERIFIED"})

#: Task types whose labels are segmentation bitmaps; anything else cannot take our labels.
BITMAP_TASK_TYPES = frozenset({"segmentation-bitmap", "segmentation-bitmap-highres"})

#: Task types whose samples are frame sequences, labelled frame by frame (one segmentation
#: bitmap, or the boxes or polygons, per frame).
SEQUENCE_TASK_TYPES = frozenset({"image-segmentation-sequence", "image-vector-sequence"})

#: Task types whose labels are boxes or polygons held in the label itself (no bitmap);
#: shared/segments-api.md section 12.
VECTOR_TASK_TYPES = frozenset({"bboxes", "vector", "image-vector-sequence"})

#: Every task type prelabel can write labels for.
LABELABLE_TASK_TYPES = BITMAP_TASK_TYPES | SEQUENCE_TASK_TYPES | VECTOR_TASK_TYPES


def may_write(status: str | None, *, overwrite: bool) -> bool:
    """Whether prelabel may write a label over one with ``status``: the one rule.

    True for no label, and for a PRELABELED label when overwriting is asked for; never for a
    label a person has worked on. Selection, the re-check before the write, the safe write
    itself, serve's webhooks and the demo all ask this function, so the rule cannot drift.
    ``may_write(status, overwrite=True)`` is "nobody has touched it": no label, or ours.
    """
    return status is None or (overwrite and status == PRELABELED)
