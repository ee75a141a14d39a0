"""Box rules every back-end shares: the detections of one image, IoU, and the NMS that turns
a detector's raw boxes into one box per object.

Back-end-neutral on purpose: whichever model finds the boxes, "higher score wins an overlap"
within a category (``nms_iou``) and across categories (``cross_category_iou``), and at most
``max_detections`` per image, so two back-ends differ in their models, not in these rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Detections:
    """Boxes of one image: ``boxes`` is ``(N, 4)`` xyxy in pixels of the image the model saw."""

    boxes: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]
    category_ids: npt.NDArray[np.int64]

    @classmethod
    def empty(cls) -> Detections:
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros(0, np.float32),
            category_ids=np.zeros(0, np.int64),
        )

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, index: npt.NDArray[np.intp]) -> Detections:
        return Detections(self.boxes[index], self.scores[index], self.category_ids[index])


def box_iou(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Pairwise IoU of xyxy boxes, ``(N, 4) x (M, 4) -> (N, M)``."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0).astype(np.float32)


def nms(
    boxes: npt.NDArray[np.float32], scores: npt.NDArray[np.float32], iou_threshold: float
) -> npt.NDArray[np.intp]:
    """Greedy non-maximum suppression; indices kept, highest score first.

    torchvision's ``nms`` would drag torchvision (and a CUDA torch) into every install; after the
    score gates an image has tens of boxes, so a numpy loop is cheap.
    """
    order = np.argsort(-scores, kind="stable")
    iou = box_iou(boxes, boxes)
    keep: list[int] = []
    suppressed = np.zeros(len(scores), dtype=bool)
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        suppressed |= iou[i] > iou_threshold
    return np.array(keep, dtype=np.intp)


def duplicate_survivors(
    boxes: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    category_ids: npt.NDArray[np.int64],
    *,
    nms_iou: float,
    cross_category_iou: float,
    max_detections: int,
) -> npt.NDArray[np.intp]:
    """Indices of the boxes that survive NMS within each category, then the drop of
    near-identical boxes across categories, highest score first, at most ``max_detections``.

    A car also detected as "truck" with an almost identical box is one object; the higher score
    keeps it. Overlapping boxes of different categories below ``cross_category_iou`` both stay
    (a person on a bicycle). Indices rather than boxes, so a back-end whose detections carry
    masks (SAM 3) keeps the masks that go with the surviving boxes.
    """
    if len(scores) == 0:
        return np.zeros(0, dtype=np.intp)
    within = np.concatenate(
        [
            np.flatnonzero(category_ids == cid)[
                nms(boxes[category_ids == cid], scores[category_ids == cid], nms_iou)
            ]
            for cid in np.unique(category_ids)
        ]
    )
    across = nms(boxes[within], scores[within], cross_category_iou)
    return within[across[:max_detections]].astype(np.intp)


def suppress_duplicates(
    detections: Detections, *, nms_iou: float, cross_category_iou: float, max_detections: int
) -> Detections:
    """The detections :func:`duplicate_survivors` keeps, in its order."""
    return detections.take(
        duplicate_survivors(
            detections.boxes,
            detections.scores,
            detections.category_ids,
            nms_iou=nms_iou,
            cross_category_iou=cross_category_iou,
            max_detections=max_detections,
        )
    )
