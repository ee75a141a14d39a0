"""Previews of a prediction or a label, made for a person reviewing it: the image stays visible.

What a reviewer needs is the photo itself with the segments marked on it, not a painting over
it. So a segment gets a light tint of its colour (35% by default) and an outline in its own
colour around each of its connected regions that is large enough to matter (at least 0.2% of
the image): a model's speckle of tiny fragments is tinted but not outlined, since a thousand
outlines around specks would hide the scene. Unassigned pixels keep the image untouched.

Colours: a category's colour (the dataset's own where it defines one) for stuff and for the
first instance of a thing; later instances of a thing get the same hue shaded lighter or darker
(and, after seven, turned slightly), so four people are four clearly different reds, not four
near-identical ones. Shades are deterministic: a preview looks the same on every run.

Names make a preview readable without a colour key. Things are numbered per category in the
order of their ids ("car 1", "car 2"). A segment large enough to hold its name gets a name tag
on the image, at its deepest point (the maximum of its distance transform) or, when another tag
is already there, at the nearest free spot on the segment; tags never overlap one another and
never leave the image. Things are tagged first, then stuff, larger segments first. A segment
whose tag finds no room is still listed in the legend :func:`preview` adds below the image,
with every other segment and its score when one is known. Text uses Pillow's default font,
scaled with the image. Previews are written as PNG everywhere (sharp outlines and text).
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw
from scipy import ndimage

from prelabel.formats.name_tags import Font, Mark, Tag, font_for, pad_for, write_tags
from prelabel.panoptic import PanopticPrediction
from prelabel.taxonomy import Category, Taxonomy

__all__ = [
    "DEFAULT_ALPHA",
    "Drawn",
    "Tag",
    "category_color",
    "colorize",
    "label_overlay",
    "label_preview",
    "overlay",
    "preview",
]

RGB = tuple[int, int, int]

#: How much of a segment's colour is blended over the image: light, so the image shows through.
DEFAULT_ALPHA = 0.35
#: Lightness offsets (HLS) of a thing's instances 0..6; from the 8th on the hue turns as well.
_SHADES = (0.0, 0.24, -0.24, 0.12, -0.12, 0.36, -0.36)
#: Hue turn per round of :data:`_SHADES` (fraction of the colour wheel).
_HUE_STEP = 0.04
#: A connected region is outlined from this share of the image's pixels on (and this many).
_MIN_OUTLINE_FRACTION = 0.002
_MIN_OUTLINE_PIXELS = 16


@dataclass(frozen=True)
class Drawn:
    """An overlay (the image's size, no legend) and the name tags placed on it."""

    image: Image.Image
    tags: tuple[Tag, ...]


def category_color(category: Category, instance_index: int) -> RGB:
    """The display colour of the ``instance_index``-th (0-based) segment of a category.

    The category's own colour when it has one (its first three components), else a colour
    picked by golden-ratio hue steps from the category id, so neighbouring ids differ clearly.
    For a thing (``has_instances``) every instance after the first is the base colour shaded:
    lighter or darker by up to 0.36 in HLS lightness, and from the 8th instance on turned in hue
    as well, so instances of one category are told apart at a glance. Deterministic, and never
    equal to the base colour. Stuff always gets the base colour.

    Raises:
        ValueError: ``instance_index`` is negative.
    """
    if instance_index < 0:
        raise ValueError(f"instance_index must be >= 0, got {instance_index}")
    base = _base_color(category)
    if not category.has_instances or instance_index == 0:
        return base
    hue, light, sat = colorsys.rgb_to_hls(*(c / 255 for c in base))
    turn, shade = divmod(instance_index, len(_SHADES))
    steps = (turn + 1) // 2 * (1 if turn % 2 else -1)  # 0, +1, -1, +2, -2, ...
    red, green, blue = colorsys.hls_to_rgb(
        (hue + _HUE_STEP * steps) % 1.0, _shaded(light, _SHADES[shade]), sat
    )
    color = (round(red * 255), round(green * 255), round(blue * 255))
    if color == base:  # a grey (no hue to turn) at an unshaded round: step its lightness
        step = 40 * turn if light < 0.5 else -40 * turn
        red, green, blue = (int(c) for c in np.clip(np.array(base) + step, 0, 255))
        color = (red, green, blue)
    return color


def _shaded(light: float, offset: float) -> float:
    """``light + offset``, wrapped around within [0.12, 0.88] (too dark or too light to tell
    apart beyond), so a light base still gets distinct shades, darker ones."""
    low, span = 0.12, 0.76
    moved = light + offset
    return moved if low <= moved <= low + span else low + (moved - low) % span


def colorize(prediction: PanopticPrediction, taxonomy: Taxonomy) -> npt.NDArray[np.uint8]:
    """``(H, W, 3)`` uint8 colour image of the map; unassigned pixels are black.

    Instances of a thing category are numbered by ascending segment id for their colours.

    Raises:
        ValueError: a segment's category is not in the taxonomy.
    """
    return _paint(prediction.id_map, _prediction_marks(prediction, taxonomy))


def overlay(
    image: Image.Image,
    prediction: PanopticPrediction,
    taxonomy: Taxonomy,
    alpha: float = DEFAULT_ALPHA,
    *,
    names: bool = True,
) -> Image.Image:
    """Segment colours tinted over the image, large regions outlined, names on the segments.

    Unassigned pixels keep the image untouched. Returns a new RGB image of the image's size.
    ``names=False`` leaves the names off (thumbnails, where they would cover everything).

    Raises:
        ValueError: ``alpha`` is outside ``[0, 1]``, the image and the map differ in size, or a
            segment's category is not in the taxonomy.
    """
    marks = _prediction_marks(prediction, taxonomy)
    return _draw(image, prediction.id_map, marks, alpha, names=names).image


def preview(
    image: Image.Image,
    prediction: PanopticPrediction,
    taxonomy: Taxonomy,
    alpha: float = DEFAULT_ALPHA,
    *,
    title: str | None = None,
    side_by_side: bool = False,
    instance_numbers: Mapping[int, int] | None = None,
) -> Image.Image:
    """:func:`overlay` with a legend below it: every segment's name, colour and score.

    ``title`` becomes the legend's first line; ``side_by_side`` puts the untouched image left of
    the overlay, for comparing the two. ``instance_numbers`` (segment id -> 0-based instance
    number of its category) replaces the per-image numbering, so a tracked object keeps its
    name and colour in every frame of a sequence. Same errors as :func:`overlay`.
    """
    marks = _prediction_marks(prediction, taxonomy, instance_numbers)
    drawn = _draw(image, prediction.id_map, marks, alpha, names=True).image
    if side_by_side:
        both = Image.new("RGB", (drawn.width * 2, drawn.height))
        both.paste(image.convert("RGB"), (0, 0))
        both.paste(drawn, (drawn.width, 0))
        drawn = both
    return _with_legend(drawn, marks, taxonomy, title)


def label_overlay(
    image: Image.Image,
    id_map: npt.NDArray[np.uint32],
    annotations: Mapping[int, int],
    taxonomy: Taxonomy,
    alpha: float = DEFAULT_ALPHA,
) -> Drawn:
    """A label as Segments stores it (an id map and ``{id: category_id}``) drawn over its image,
    with the name tags placed: what :func:`label_preview` shows above its legend.

    Pixels whose id has no annotation are drawn as unassigned.

    Raises:
        ValueError: as :func:`overlay`; also for an annotation whose category is unknown.
    """
    shown, marks = _label_marks(id_map, annotations, taxonomy)
    return _draw(image, shown, marks, alpha, names=True)


def label_preview(
    image: Image.Image,
    id_map: npt.NDArray[np.uint32],
    annotations: Mapping[int, int],
    taxonomy: Taxonomy,
    alpha: float = DEFAULT_ALPHA,
    *,
    title: str | None = None,
) -> Image.Image:
    """:func:`label_overlay` with a legend below it. A label carries one score, not one per
    segment, so the legend shows none. Same errors as :func:`label_overlay`."""
    shown, marks = _label_marks(id_map, annotations, taxonomy)
    drawn = _draw(image, shown, marks, alpha, names=True).image
    return _with_legend(drawn, marks, taxonomy, title)


def _label_marks(
    id_map: npt.NDArray[np.uint32], annotations: Mapping[int, int], taxonomy: Taxonomy
) -> tuple[npt.NDArray[np.uint32], list[Mark]]:
    """The id map with unannotated ids set to 0, and a mark per annotated id present."""
    present = [int(i) for i in np.unique(id_map) if i != 0 and int(i) in annotations]
    shown = np.where(np.isin(id_map, present), id_map, 0).astype(np.uint32)
    return shown, _marks(((i, annotations[i], None) for i in present), taxonomy, shown)


def _prediction_marks(
    prediction: PanopticPrediction,
    taxonomy: Taxonomy,
    instance_numbers: Mapping[int, int] | None = None,
) -> list[Mark]:
    by_id = {seg.id: seg.bbox for seg in prediction.segments}
    entries = ((s.id, s.category_id, s.score) for s in prediction.segments)
    return _marks(entries, taxonomy, prediction.id_map, bboxes=by_id, numbers=instance_numbers)


def _marks(
    entries: Iterable[tuple[int, int, float | None]],
    taxonomy: Taxonomy,
    id_map: npt.NDArray[np.uint32],
    *,
    bboxes: Mapping[int, tuple[int, int, int, int]] | None = None,
    numbers: Mapping[int, int] | None = None,
) -> list[Mark]:
    """One mark per ``(segment id, category id, score)``, instances numbered by ascending id
    unless ``numbers`` gives a segment's number."""
    categories = {cat.id: cat for cat in taxonomy.categories}
    seen: dict[int, int] = {}
    marks = []
    for seg_id, category_id, score in sorted(entries):
        category = categories.get(category_id)
        if category is None:
            raise ValueError(
                f"segment {seg_id} has category id {category_id}, which the taxonomy "
                f"lacks (it has {sorted(categories)})"
            )
        index = seen.get(category_id, 0)
        seen[category_id] = index + 1
        if numbers is not None and seg_id in numbers:
            index = numbers[seg_id]
        caption = f"{category.name} {index + 1}" if category.has_instances else category.name
        bbox = bboxes[seg_id] if bboxes is not None else _bbox(id_map == seg_id)
        color = category_color(category, index)
        marks.append(Mark(seg_id, category, caption, color, score, bbox))
    return marks


def _paint(id_map: npt.NDArray[np.uint32], marks: Sequence[Mark]) -> npt.NDArray[np.uint8]:
    lut = np.zeros((max((m.seg_id for m in marks), default=0) + 1, 3), dtype=np.uint8)
    for mark in marks:
        lut[mark.seg_id] = mark.color
    return np.take(lut, id_map, axis=0)


def _draw(
    image: Image.Image,
    id_map: npt.NDArray[np.uint32],
    marks: Sequence[Mark],
    alpha: float,
    *,
    names: bool,
) -> Drawn:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    height, width = id_map.shape
    if image.size != (width, height):
        raise ValueError(
            f"image size {image.size} differs from the prediction's {(width, height)} "
            "(both (width, height))"
        )
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    colors = _paint(id_map, marks).astype(np.float32)
    assigned = (id_map != 0)[:, :, None]
    out = np.where(assigned, base * (1.0 - alpha) + colors * alpha, base)
    outlined = _outlined_regions(id_map)
    edge = _boundaries(outlined) & (outlined != 0)
    out[edge] = _paint(outlined, marks)[edge]
    drawn = Image.fromarray(np.rint(out).astype(np.uint8))
    tags = write_tags(drawn, id_map, marks) if names else ()
    return Drawn(drawn, tags)


def _outlined_regions(id_map: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint32]:
    """``id_map`` with every connected region under the outline size given to its nearest large
    region, so boundaries are drawn around large regions only (specks get no outline)."""
    min_size = max(_MIN_OUTLINE_PIXELS, round(_MIN_OUTLINE_FRACTION * id_map.size))
    _, compact = np.unique(id_map, return_inverse=True)
    compact = compact.reshape(id_map.shape)
    keep = np.zeros(id_map.shape, dtype=np.bool_)
    for index, window in enumerate(ndimage.find_objects(compact + 1)):
        if window is None:
            continue
        regions, _ = ndimage.label(compact[window] == index)
        sizes = np.bincount(regions.ravel())
        large = sizes >= min_size
        large[0] = False
        keep[window] |= large[regions]
    if keep.all():
        return id_map
    if not keep.any():
        return np.zeros_like(id_map)
    _, (rows, cols) = ndimage.distance_transform_edt(~keep, return_indices=True)
    return id_map[rows, cols]


def _with_legend(
    image: Image.Image, marks: Sequence[Mark], taxonomy: Taxonomy, title: str | None
) -> Image.Image:
    """``image`` above a white panel: ``title``, then one swatch and caption per segment.

    Entries follow the taxonomy's category order, then instance number, in as many columns as
    the image's width holds.
    """
    font = font_for(image.size)
    pad = pad_for(font)
    order = {cat.id: i for i, cat in enumerate(taxonomy.categories)}
    ordered = sorted(marks, key=lambda m: (order.get(m.category.id, len(order)), m.seg_id))
    texts = [m.caption if m.score is None else f"{m.caption}  {m.score:.2f}" for m in ordered]
    measure = ImageDraw.Draw(image)
    line_h = max(_text_size(measure, "Ag", font)[1], 1) + 2 * pad
    swatch = line_h - 2 * pad
    cell_w = swatch + 4 * pad + max((_text_size(measure, t, font)[0] for t in texts), default=0)
    columns = max(1, image.width // cell_w)
    lines = ([title] if title else []) + ([] if texts else ["no segments"])
    rows = len(lines) + math.ceil(len(texts) / columns)
    canvas = Image.new("RGB", (image.width, image.height + rows * line_h + pad), "white")
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    top = image.height + pad
    for row, line in enumerate(lines):
        draw.text((pad, top + row * line_h + pad), line, fill=(0, 0, 0), font=font)
    top += len(lines) * line_h
    for index, (mark, text) in enumerate(zip(ordered, texts, strict=True)):
        x = pad + (index % columns) * cell_w
        y = top + (index // columns) * line_h
        draw.rectangle((x, y + pad, x + swatch, y + pad + swatch), fill=mark.color, outline="gray")
        draw.text((x + swatch + 2 * pad, y + pad), text, fill=(0, 0, 0), font=font)
    return canvas


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: Font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return int(right - left), int(bottom - top)


def _bbox(mask: npt.NDArray[np.bool_]) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    x0, y0 = int(cols[0]), int(rows[0])
    return x0, y0, int(cols[-1]) - x0 + 1, int(rows[-1]) - y0 + 1


def _base_color(category: Category) -> RGB:
    if category.color is not None and len(category.color) >= 3:
        r, g, b = (int(np.clip(c, 0, 255)) for c in category.color[:3])
        return r, g, b
    hue = (category.id * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.65, 0.95)
    return round(red * 255), round(green * 255), round(blue * 255)


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
