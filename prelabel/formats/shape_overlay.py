"""Previews of a box or polygon label: what ``prelabel predict --format bboxes|vector`` draws.

The preview is :func:`~prelabel.formats.overlay.preview`'s (light tint, names, a legend with
scores) of the segments that became shapes only (no tint where nothing was written: stuff in
a box label), with every written shape drawn over it in its segment's colour: a box as its
rectangle, a polygon as its ring. So what a reviewer sees outlined is exactly the geometry in
the label JSON, simplification and dropped parts included, not the mask it came from.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from prelabel.formats.overlay import category_color, preview
from prelabel.panoptic import PanopticPrediction, Segment
from prelabel.taxonomy import Taxonomy

__all__ = ["shapes_preview"]


def shapes_preview(
    image: Image.Image,
    prediction: PanopticPrediction,
    shapes: Sequence[tuple[Segment, list[list[float]]]],
    kind: str,
    taxonomy: Taxonomy,
    *,
    title: str | None = None,
) -> Image.Image:
    """The preview of ``prediction`` restricted to the segments of ``shapes``, each shape
    (:func:`~prelabel.formats.vector_label.segment_shapes`, of type ``kind``) outlined on it.

    Raises:
        ValueError: as :func:`~prelabel.formats.overlay.preview`.
    """
    kept = {seg.id for seg, _ in shapes}
    shown = PanopticPrediction(
        id_map=np.where(np.isin(prediction.id_map, list(kept)), prediction.id_map, 0).astype(
            np.uint32
        ),
        segments=tuple(s for s in prediction.segments if s.id in kept),
    )
    drawn = preview(image, shown, taxonomy, title=title)
    colors = _segment_colors(shown.segments, taxonomy)
    width = max(2, round(min(image.size) / 200))
    draw = ImageDraw.Draw(drawn)
    for seg, points in shapes:
        color = colors[seg.id]
        if kind == "bbox":
            (x0, y0), (x1, y1) = points
            # Corners are pixel edges; the outline's pixels are the box's border pixels.
            box = (x0, y0, max(x0, x1 - 1), max(y0, y1 - 1))
            draw.rectangle(box, outline=color, width=width)
        else:
            ring = [(x, y) for x, y in points]
            draw.line([*ring, ring[0]], fill=color, width=width, joint="curve")
    return drawn


def _segment_colors(
    segments: Sequence[Segment], taxonomy: Taxonomy
) -> dict[int, tuple[int, int, int]]:
    """Each segment's colour as the preview paints it: the n-th instance of a category by
    ascending segment id gets :func:`category_color`'s n-th shade."""
    categories = {cat.id: cat for cat in taxonomy.categories}
    seen: dict[int, int] = {}
    colors: dict[int, tuple[int, int, int]] = {}
    for seg in sorted(segments, key=lambda s: s.id):
        index = seen.get(seg.category_id, 0)
        seen[seg.category_id] = index + 1
        colors[seg.id] = category_color(categories[seg.category_id], index)
    return colors
