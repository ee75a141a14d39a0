"""Previews of a prediction or a label: each segment in its category's colour, outlined, named.

Colours follow panopticapi: a category's colour (the dataset's own where it defines one) for
stuff and for the first instance of a thing, a jittered variant of it for the later instances.
Unlike panopticapi the jitter is seeded by (category, instance), so a preview looks the same on
every run.

Names make a preview readable without a colour key. Things are numbered per category in the
order of their ids ("car 1", "car 2"), so two cars that touch are told apart three ways: the
outline between them, their colours and their numbers. A segment large enough to hold its name
gets it on the image, at its deepest point (the maximum of its distance transform, so the name
sits inside even a ring-shaped segment); :func:`preview` adds a legend below the image that lists
every segment, the small ones too, with its score when one is known. Text uses Pillow's default
font, scaled with the image.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from prelabel.panoptic import PanopticPrediction
from prelabel.taxonomy import Category, Taxonomy

__all__ = ["category_color", "colorize", "label_preview", "overlay", "preview"]

RGB = tuple[int, int, int]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

#: Largest channel offset of a later instance's colour (panopticapi uses 30 as well).
_JITTER = 30
#: Colour of segment boundaries in :func:`overlay`.
_EDGE_COLOR = np.array([255, 255, 255], dtype=np.float32)
#: Longest side of the mask a name's position is searched in; larger masks are subsampled, so
#: placing names costs the same on a 4000 px image as on a thumbnail.
_PLACEMENT_SIDE = 128


@dataclass(frozen=True)
class _Mark:
    """How one segment is drawn: its colour, its name on the image and in the legend."""

    seg_id: int
    category: Category
    caption: str
    color: RGB
    score: float | None
    #: ``(x, y, width, height)`` of the segment's pixels.
    bbox: tuple[int, int, int, int]


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
    return _paint(prediction.id_map, _prediction_marks(prediction, taxonomy))


def overlay(
    image: Image.Image,
    prediction: PanopticPrediction,
    taxonomy: Taxonomy,
    alpha: float = 0.5,
    *,
    names: bool = True,
) -> Image.Image:
    """Segment colours blended over the image, boundaries in white, names on the segments.

    Unassigned pixels keep the image untouched. Returns a new RGB image of the image's size.
    ``names=False`` leaves the names off (thumbnails, where they would cover everything).

    Raises:
        ValueError: ``alpha`` is outside ``[0, 1]``, the image and the map differ in size, or a
            segment's category is not in the taxonomy.
    """
    marks = _prediction_marks(prediction, taxonomy)
    return _draw(image, prediction.id_map, marks, alpha, names=names)


def preview(
    image: Image.Image,
    prediction: PanopticPrediction,
    taxonomy: Taxonomy,
    alpha: float = 0.5,
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
    drawn = _draw(image, prediction.id_map, marks, alpha, names=True)
    if side_by_side:
        both = Image.new("RGB", (drawn.width * 2, drawn.height))
        both.paste(image.convert("RGB"), (0, 0))
        both.paste(drawn, (drawn.width, 0))
        drawn = both
    return _with_legend(drawn, marks, taxonomy, title)


def label_preview(
    image: Image.Image,
    id_map: npt.NDArray[np.uint32],
    annotations: Mapping[int, int],
    taxonomy: Taxonomy,
    alpha: float = 0.5,
    *,
    title: str | None = None,
) -> Image.Image:
    """:func:`preview` of a label as Segments stores it: an id map and ``{id: category_id}``.

    Pixels whose id has no annotation are drawn as unassigned. A label carries one score, not
    one per segment, so the legend shows none.

    Raises:
        ValueError: as :func:`overlay`; also for an annotation whose category is unknown.
    """
    present = [int(i) for i in np.unique(id_map) if i != 0 and int(i) in annotations]
    shown = np.where(np.isin(id_map, present), id_map, 0).astype(np.uint32)
    marks = _marks(((i, annotations[i], None) for i in present), taxonomy, shown)
    drawn = _draw(image, shown, marks, alpha, names=True)
    return _with_legend(drawn, marks, taxonomy, title)


def _prediction_marks(
    prediction: PanopticPrediction,
    taxonomy: Taxonomy,
    instance_numbers: Mapping[int, int] | None = None,
) -> list[_Mark]:
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
) -> list[_Mark]:
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
        marks.append(_Mark(seg_id, category, caption, color, score, bbox))
    return marks


def _paint(id_map: npt.NDArray[np.uint32], marks: Sequence[_Mark]) -> npt.NDArray[np.uint8]:
    lut = np.zeros((max((m.seg_id for m in marks), default=0) + 1, 3), dtype=np.uint8)
    for mark in marks:
        lut[mark.seg_id] = mark.color
    return np.take(lut, id_map, axis=0)


def _draw(
    image: Image.Image,
    id_map: npt.NDArray[np.uint32],
    marks: Sequence[_Mark],
    alpha: float,
    *,
    names: bool,
) -> Image.Image:
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
    out[_boundaries(id_map)] = _EDGE_COLOR
    drawn = Image.fromarray(np.rint(out).astype(np.uint8))
    if names:
        _write_names(drawn, id_map, marks)
    return drawn


def _write_names(
    image: Image.Image, id_map: npt.NDArray[np.uint32], marks: Sequence[_Mark]
) -> None:
    """Each segment's caption at its deepest point, where the segment's box can hold it."""
    font = _font(image.size)
    draw = ImageDraw.Draw(image)
    pad = _pad(font)
    for mark in marks:
        left, top, right, bottom = draw.textbbox((0, 0), mark.caption, font=font)
        box_w, box_h = right - left + 2 * pad, bottom - top + 2 * pad
        _, _, seg_w, seg_h = mark.bbox
        if seg_w < box_w or seg_h < box_h:
            continue  # too small to name on the image; the legend lists it
        cx, cy = _deepest_point(id_map, mark)
        x0 = min(max(cx - box_w // 2, 0), image.width - box_w)
        y0 = min(max(cy - box_h // 2, 0), image.height - box_h)
        draw.rectangle((x0, y0, x0 + box_w - 1, y0 + box_h - 1), fill=mark.color)
        draw.text((x0 + pad - left, y0 + pad - top), mark.caption, fill=_ink(mark.color), font=font)


def _with_legend(
    image: Image.Image, marks: Sequence[_Mark], taxonomy: Taxonomy, title: str | None
) -> Image.Image:
    """``image`` above a white panel: ``title``, then one swatch and caption per segment.

    Entries follow the taxonomy's category order, then instance number, in as many columns as
    the image's width holds.
    """
    font = _font(image.size)
    pad = _pad(font)
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


def _font(size: tuple[int, int]) -> Font:
    """Pillow's default font, about 1/80 of the image's longer side and never under 10 px."""
    return ImageFont.load_default(size=max(10, round(max(size) / 80)))


def _pad(font: Font) -> int:
    return max(1, round(getattr(font, "size", 10) / 5))


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: Font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return int(right - left), int(bottom - top)


def _ink(color: RGB) -> RGB:
    """Black text on light colours, white on dark ones (ITU-R 601 luma)."""
    red, green, blue = color
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 140 else (255, 255, 255)


def _deepest_point(id_map: npt.NDArray[np.uint32], mark: _Mark) -> tuple[int, int]:
    """``(x, y)`` of the segment's pixel farthest from its edge (subsampled for big masks)."""
    x, y, w, h = mark.bbox
    mask = id_map[y : y + h, x : x + w] == mark.seg_id
    step = max(1, math.ceil(max(w, h) / _PLACEMENT_SIDE))
    small = mask[::step, ::step]
    if not small.any():
        iy, ix = np.argwhere(mask)[0]
        return x + int(ix), y + int(iy)
    distance = ndimage.distance_transform_edt(np.pad(small, 1))[1:-1, 1:-1]
    iy, ix = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return x + int(ix) * step, y + int(iy) * step


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
