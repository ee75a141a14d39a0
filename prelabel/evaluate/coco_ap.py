"""COCO-style average precision of boxes or polygons against a person's, through pycocotools.

Box and polygon datasets (``bboxes``, ``vector``) have no panoptic map to score with PQ; their
measure is the one detectors are compared by: AP averaged over IoU thresholds 0.50:0.05:0.95,
AP50, AP75, and AP per category (101-point interpolated precision, up to 100 detections per
image, COCO's definition, computed by pycocotools' own ``COCOeval`` rather than rewritten).
Shapes come in Segments' label form (shared/segments-api.md 12.2): a ``bbox`` is two corners,
a ``polygon`` one ring of ``[x, y]`` points; polygon IoU is pycocotools' mask IoU.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prelabel.formats.coco_instances import coco_shape

__all__ = ["APResult", "ScoredShape", "VectorImage", "coco_ap"]


@dataclass(frozen=True)
class ScoredShape:
    """One predicted shape and its detection score."""

    annotation: Mapping[str, Any]
    score: float


@dataclass(frozen=True)
class VectorImage:
    """One image: its size, a person's shapes (``truth``) and the predicted ones."""

    width: int
    height: int
    truth: Sequence[Mapping[str, Any]]
    predicted: Sequence[ScoredShape] = ()


@dataclass(frozen=True)
class APResult:
    """AP (0.50:0.95), AP50 and AP75 over the categories with ground truth, and AP per
    category id (0.50:0.95); ``nan`` where nothing could be measured."""

    ap: float
    ap50: float
    ap75: float
    per_category: dict[int, float] = field(default_factory=dict)
    images: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ap": self.ap,
            "ap50": self.ap50,
            "ap75": self.ap75,
            "per_category": {str(k): v for k, v in sorted(self.per_category.items())},
            "images": self.images,
        }


def coco_ap(images: Sequence[VectorImage], kind: str, category_ids: Iterable[int]) -> APResult:
    """Score ``images``' predicted shapes of ``kind`` (``"bbox"`` or ``"polygon"``) against
    their ground truth; shapes of other types are ignored (a person may draw points too)."""
    if kind not in ("bbox", "polygon"):
        raise ValueError(f"kind must be bbox or polygon, got {kind!r}")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    categories = sorted(set(category_ids))
    truth, detections = _coco_json(images, kind)
    if not truth["annotations"] or not detections:
        nan = float("nan")
        return APResult(nan, nan, nan, dict.fromkeys(categories, nan), len(images))
    truth["categories"] = [{"id": c} for c in categories]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it goes
        ground = COCO()
        ground.dataset = truth
        ground.createIndex()
        evaluation = COCOeval(
            ground, ground.loadRes(detections), "bbox" if kind == "bbox" else "segm"
        )
        evaluation.params.catIds = categories
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = evaluation.stats
    precision = evaluation.eval["precision"]  # [IoU, recall, category, area, max dets]
    per_category = {c: _mean(precision[:, :, k, 0, -1]) for k, c in enumerate(categories)}
    return APResult(float(stats[0]), float(stats[1]), float(stats[2]), per_category, len(images))


def _mean(values: np.ndarray) -> float:
    """COCOeval's mean: entries of -1 (no ground truth) do not count."""
    kept = values[values > -1]
    return float(kept.mean()) if kept.size else float("nan")


def _coco_json(
    images: Sequence[VectorImage], kind: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ground-truth dataset and the detection list, in COCO's JSON form."""
    truth: dict[str, Any] = {"images": [], "annotations": []}
    detections: list[dict[str, Any]] = []
    for image_id, image in enumerate(images, start=1):
        truth["images"].append({"id": image_id, "width": image.width, "height": image.height})
        for annotation in image.truth:
            if annotation.get("type") == kind:
                entry = coco_shape(annotation, kind)
                entry.update(id=len(truth["annotations"]) + 1, image_id=image_id, iscrowd=0)
                truth["annotations"].append(entry)
        for shape in image.predicted:
            if shape.annotation.get("type") == kind:
                entry = coco_shape(shape.annotation, kind)
                entry.update(image_id=image_id, score=float(shape.score))
                detections.append(entry)
    return truth, detections
