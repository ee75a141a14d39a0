"""Colour previews of a prediction: each segment in its category's colour, outlined.

Colours follow panopticapi: a category's colour for stuff and for the first instance of a
thing, a jittered variant of it for the later instances. Unlike panopticapi the jitter is seeded
by (category, instance), so a preview looks the same on every run.
"""

from __future__ import annotations

import colorsys

import numpy as np
import numpy.typing as npt
from PIL import Image

from prelabel.panoptic import PanopticPrediction
from prelabel.taxonomy import Category, Taxonomy

__all__ = ["category_color", "colorize", "overlay"]

RGB = tuple[int, int, int]

#: Largest channel offset of a later instance's colour (panopticapi uses 30 as well).
_JITTER = 30
#: Colour of segment boundaries in :func:`overlay`.
_EDGE_COLOR = np.array([255, 255, 255], dtype=np.float32)


def category_color(category: Category, instance_index: int) -> RGB:
    """The display colour of the ``instance_index``-th (0-based) segment of a category.

    The category's own colour when it has one (its first three components), else a colour
    picked by golden-ratio hue steps from the category id, so neighbouring ids differ clearly.
    For a thing (``has_instances``) every instance after the first gets the base colour moved
    by up to 30 per channel, seeded by (category id, instance index): deterministic, and never
    equal to the base colour. Stuff always gets the base colour.

    Raises:
        ValueError: ``instance_index`` is negative.
    """
    if instance_index < 0:
        raise ValueError(f"instance_index must be >= 0, got {instance_index}")
    base = _base_color(category)
    if not category.has_instances or instance_index == 0:
        return base
    rng = np.random.default_rng([category.id, instance_index])
    while True:
        offset = rng.integers(-_JITTER, _JITTER + 1, size=3)
        color = np.clip(np.array(base) + offset, 0, 255)
        jittered = (int(color[0]), int(color[1]), int(color[2]))
        if jittered != base:
            return jittered


def colorize(prediction: PanopticPrediction, taxonomy: Taxonomy) -> npt.NDArray[np.uint8]:
    """``(H, W, 3)`` uint8 colour image of the map; unassigned pixels are black.

    Instances of a thing category are numbered by ascending segment id for their colours.

    Raises:
        ValueError: a segment's category is not in the taxonomy.
    """
    colors = _segment_colors(prediction, taxonomy)
    lut = np.zeros((max(colors, default=0) + 1, 3), dtype=np.uint8)
    for seg_id, color in colors.items():
        lut[seg_id] = color
    return np.take(lut, prediction.id_map, axis=0)


def overlay(
    image: Image.Image,
    prediction: PanopticPrediction,
    taxonomy: Taxonomy,
    alpha: float = 0.5,
) -> Image.Image:
    """A preview: segment colours blended over the image, boundaries drawn in white.

    Unassigned pixels keep the image untouched. Returns a new RGB image of the image's size.

    Raises:
        ValueError: ``alpha`` is outside ``[0, 1]``, the image and the map differ in size, or a
            segment's category is not in the taxonomy.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if image.size != prediction.size:
        raise ValueError(
            f"image size {image.size} differs from the prediction's {prediction.size} "
            "(both (width, height))"
        )
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    colors = colorize(prediction, taxonomy).astype(np.float32)
    assigned = (prediction.id_map != 0)[:, :, None]
    out = np.where(assigned, base * (1.0 - alpha) + colors * alpha, base)
    out[_boundaries(prediction.id_map)] = _EDGE_COLOR
    return Image.fromarray(np.rint(out).astype(np.uint8))


def _base_color(category: Category) -> RGB:
    if category.color is not None and len(category.color) >= 3:
        r, g, b = (int(np.clip(c, 0, 255)) for c in category.color[:3])
        return r, g, b
    hue = (category.id * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.65, 0.95)
    return round(red * 255), round(green * 255), round(blue * 255)


def _segment_colors(prediction: PanopticPrediction, taxonomy: Taxonomy) -> dict[int, RGB]:
    categories = {cat.id: cat for cat in taxonomy.categories}
    seen: dict[int, int] = {}
    colors: dict[int, RGB] = {}
    for seg in sorted(prediction.segments, key=lambda s: s.id):
        category = categories.get(seg.category_id)
        if category is None:
            raise ValueError(
                f"segment {seg.id} has category id {seg.category_id}, which the taxonomy "
                f"lacks (it has {sorted(categories)})"
            )
        index = seen.get(seg.category_id, 0)
        seen[seg.category_id] = index + 1
        colors[seg.id] = category_color(category, index)
    return colors


def _boundaries(id_map: npt.NDArray[np.uint32]) -> npt.NDArray[np.bool_]:
    """Pixels whose right or lower neighbour has another id, and those neighbours (2 px lines)."""
    edge = np.zeros(id_map.shape, dtype=np.bool_)
    horizontal = id_map[:, 1:] != id_map[:, :-1]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    vertical = id_map[1:, :] != id_map[:-1, :]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    return edge
