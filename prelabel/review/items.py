"""What the review session shows of one predicted image: :class:`ReviewItem`.

On a bitmap dataset the item shows the panoptic overlay; on a ``bboxes`` or ``vector`` dataset
(``kind`` set) it shows the boxes or polygons ``prelabel run`` would write, traced by the same
encoder with the same ``vector`` settings (:func:`~prelabel.formats.vector_label.segment_shapes`),
over the segments they came from (:func:`~prelabel.formats.shape_overlay.shapes_preview`).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from PIL import Image

from prelabel.config import VectorSettings
from prelabel.formats.label import label_score
from prelabel.formats.overlay import overlay, preview
from prelabel.formats.shape_overlay import shapes_preview
from prelabel.formats.vector_label import segment_shapes
from prelabel.panoptic import PanopticPrediction
from prelabel.segments.client import SampleRef
from prelabel.taxonomy import Taxonomy

__all__ = ["ReviewItem", "render_table"]


@dataclass
class ReviewItem:
    """One sample with its prediction; shows itself as image, overlay and segment table."""

    sample: SampleRef
    image: Image.Image
    prediction: PanopticPrediction
    taxonomy: Taxonomy = field(repr=False)
    #: ``bbox`` or ``polygon`` on a box or polygon dataset (what its label holds); ``None``:
    #: a bitmap dataset.
    kind: str | None = None
    vector: VectorSettings = field(default_factory=VectorSettings, repr=False)

    def rows(self) -> list[dict[str, object]]:
        """One row per segment: id, category, thing/stuff, score, area (largest first)."""
        return [
            {
                "id": seg.id,
                "category": self.taxonomy.category(seg.category_id).name,
                "kind": "thing" if seg.is_thing else "stuff",
                "score": round(seg.score, 3),
                "area": seg.area,
            }
            for seg in sorted(self.prediction.segments, key=lambda s: -s.area)
        ]

    @property
    def score(self) -> float:
        """The label score ``prelabel run`` would give this prediction (see the README)."""
        return label_score(self.prediction)

    def shapes(self) -> list[tuple[int, str, list[list[float]]]]:
        """On a box or polygon dataset, each shape the label would hold: ``(segment id,
        category name, points)``, in the label's order; empty on a bitmap dataset."""
        if self.kind is None:
            return []
        return [
            (seg.id, self.taxonomy.category(seg.category_id).name, points)
            for seg, points in segment_shapes(self.prediction, self.kind, self.vector)
        ]

    def preview(self, max_width: int = 1024) -> Image.Image:
        """The image and its pre-label overlay side by side, with a legend below; on a box or
        polygon dataset the overlay outlines the shapes the label would hold."""
        title = f"{self.sample.name}: score {self.score:.2f}"
        if self.kind is not None:
            return _fit(self._shapes_preview(title), max_width)
        both = preview(self.image, self.prediction, self.taxonomy, title=title, side_by_side=True)
        return _fit(both, max_width)

    def thumbnail(self, width: int = 160) -> Image.Image:
        """The overlay without names (with them, outlined, on a box or polygon dataset),
        ``width`` pixels wide: for a gallery."""
        if self.kind is not None:
            shown = self._shapes_preview(None).crop((0, 0, *self.image.size))
            return _fit(shown, width)
        return _fit(overlay(self.image, self.prediction, self.taxonomy, names=False), width)

    def _shapes_preview(self, title: str | None) -> Image.Image:
        assert self.kind is not None
        shapes = segment_shapes(self.prediction, self.kind, self.vector)
        return shapes_preview(
            self.image, self.prediction, shapes, self.kind, self.taxonomy, title=title
        )

    def _repr_html_(self) -> str:
        return f"<b>{html.escape(self.sample.name)}</b>" + render_table(self.rows())


def _fit(image: Image.Image, max_width: int) -> Image.Image:
    if image.width <= max_width:
        return image
    return image.resize((max_width, max(1, round(image.height * max_width / image.width))))


def render_table(rows: Sequence[Mapping[str, object]]) -> str:
    """A plain HTML table (no pandas needed)."""
    if not rows:
        return "<p><i>no segments</i></p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values()) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
