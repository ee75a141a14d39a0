"""The COCO-instance export of ``prelabel predict --format bboxes|vector`` (``instances.json``).

COCO's object-detection form, as detectors and pycocotools read it: ``images``, ``categories``
and ``annotations``, one annotation per written box or polygon with ``bbox`` ``[x, y, w, h]``,
``area``, ``iscrowd: 0``, the detection ``score`` (a results file and a dataset in one) and, for
a polygon, ``segmentation`` as one flat ``[x0, y0, x1, y1, ...]`` ring. Shapes come in
Segments' label form (shared/segments-api.md 12.2), so the export and the label JSON written
beside it hold the same geometry. :func:`coco_shape` is also what the AP evaluation scores.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from prelabel.formats.atomic import write_json
from prelabel.taxonomy import Taxonomy

__all__ = ["CocoInstancesWriter", "coco_shape"]


def coco_shape(annotation: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """``category_id``, ``bbox``, ``area`` (and ``segmentation`` for a polygon) of one shape
    of type ``kind`` (``"bbox"`` or ``"polygon"``); a polygon's area is its ring's (shoelace)."""
    points = np.asarray(annotation["points"], dtype=float)
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    entry: dict[str, Any] = {
        "category_id": int(annotation["category_id"]),
        "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
    }
    if kind == "bbox":
        entry["area"] = float((x1 - x0) * (y1 - y0))
    else:
        xs, ys = points[:, 0], points[:, 1]
        entry["area"] = float(abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))) / 2)
        entry["segmentation"] = [points.ravel().tolist()]
    return entry


class CocoInstancesWriter:
    """Accumulates one COCO-instance export: :meth:`add` per image, :meth:`close` writes it.

    Only the shapes (tens of points each) stay in memory. The JSON is written atomically, so
    a crash never leaves half a file under the final name.
    """

    def __init__(self, path: Path, taxonomy: Taxonomy, kind: str) -> None:
        if kind not in ("bbox", "polygon"):
            raise ValueError(f"kind must be bbox or polygon, got {kind!r}")
        self.path = Path(path)
        self.taxonomy = taxonomy
        self.kind = kind
        self._images: list[dict[str, Any]] = []
        self._annotations: list[dict[str, Any]] = []

    def add(
        self,
        file_name: str,
        size: tuple[int, int],
        annotations: list[dict[str, Any]],
        scores: list[float],
    ) -> None:
        """One image (``size`` is width, height) and its label annotations with their scores,
        in the same order."""
        if len(annotations) != len(scores):
            raise ValueError(f"{len(annotations)} annotations but {len(scores)} scores")
        image_id = len(self._images) + 1
        width, height = size
        self._images.append(
            {"id": image_id, "file_name": file_name, "width": width, "height": height}
        )
        for annotation, score in zip(annotations, scores, strict=True):
            entry = coco_shape(annotation, self.kind)
            entry.update(
                id=len(self._annotations) + 1,
                image_id=image_id,
                iscrowd=0,
                score=round(float(score), 4),
            )
            self._annotations.append(entry)

    def close(self) -> Path:
        """Write the JSON (every taxonomy category, ``isthing`` from ``has_instances``)."""
        write_json(
            self.path,
            {
                "images": self._images,
                "annotations": self._annotations,
                "categories": [
                    {"id": cat.id, "name": cat.name, "isthing": int(cat.has_instances)}
                    for cat in self.taxonomy.categories
                ],
            },
        )
        return self.path
