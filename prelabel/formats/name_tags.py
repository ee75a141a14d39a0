"""Name tags on an overlay: where each segment's caption goes, so that no two tags overlap.

A reviewer reads the tags to know what each segment is; tags piled on one another or cut off
at the image's edge are worse than none. :func:`write_tags` places each caption at its
segment's deepest point, or at the nearest spot on the segment that no earlier tag covers, and
always fully inside the image; a segment without room is left to the legend. See
:mod:`prelabel.formats.overlay` for the rest of the preview.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from prelabel.taxonomy import Category

__all__ = ["Font", "Mark", "Tag", "font_for", "ink", "pad_for", "write_tags"]

RGB = tuple[int, int, int]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

#: Longest side of the mask a name's position is searched in; larger masks are subsampled, so
#: placing names costs the same on a 4000 px image as on a thumbnail.
_PLACEMENT_SIDE = 128


@dataclass(frozen=True)
class Tag:
    """A name tag drawn on the image: its text and its box, ``(x0, y0, x1, y1)`` exclusive."""

    caption: str
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class Mark:
    """How one segment is drawn: its colour, its name on the image and in the legend."""

    seg_id: int
    category: Category
    caption: str
    color: RGB
    score: float | None
    #: ``(x, y, width, height)`` of the segment's pixels.
    bbox: tuple[int, int, int, int]


def write_tags(
    image: Image.Image, id_map: npt.NDArray[np.uint32], marks: Sequence[Mark]
) -> tuple[Tag, ...]:
    """Each segment's caption on the segment, where no other tag is and inside the image.

    Things first, then stuff, each larger segments first; a segment too small for its tag, or
    whose every candidate spot is taken, is left to the legend.
    """
    font = font_for(image.size)
    draw = ImageDraw.Draw(image)
    pad = pad_for(font)
    ids, counts = np.unique(id_map, return_counts=True)
    area = dict(zip(ids.tolist(), counts.tolist(), strict=True))
    order = sorted(marks, key=lambda m: (not m.category.has_instances, -area.get(m.seg_id, 0)))
    placed: list[Tag] = []
    for mark in order:
        left, top, right, bottom = draw.textbbox((0, 0), mark.caption, font=font)
        box_w, box_h = int(right - left) + 2 * pad, int(bottom - top) + 2 * pad
        _, _, seg_w, seg_h = mark.bbox
        too_small = seg_w < box_w or seg_h < box_h or area.get(mark.seg_id, 0) < box_w * box_h
        if too_small or box_w > image.width or box_h > image.height:
            continue  # too small to name on the image; the legend lists it
        spot = _free_spot(id_map, mark, (box_w, box_h), placed)
        if spot is None:
            continue
        x0, y0 = spot
        draw.rectangle((x0, y0, x0 + box_w - 1, y0 + box_h - 1), fill=mark.color)
        draw.text((x0 + pad - left, y0 + pad - top), mark.caption, fill=ink(mark.color), font=font)
        placed.append(Tag(mark.caption, (x0, y0, x0 + box_w, y0 + box_h)))
    return tuple(placed)


def _free_spot(
    id_map: npt.NDArray[np.uint32],
    mark: Mark,
    size: tuple[int, int],
    placed: Sequence[Tag],
) -> tuple[int, int] | None:
    """Top-left corner of a tag of ``size`` centred on the segment and clear of ``placed``.

    Tries the segment's deepest point, then rings of spots around it a tag's size apart; a spot
    counts only when its centre is on the segment. The tag is kept inside the image.
    """
    height, width = id_map.shape
    box_w, box_h = size
    cx, cy = _deepest_point(id_map, mark)
    for ring in range(_RINGS + 1):
        for dx, dy in _ring(ring):
            x, y = cx + dx * box_w, cy + dy * box_h
            if not (0 <= x < width and 0 <= y < height) or id_map[y, x] != mark.seg_id:
                continue
            x0 = min(max(x - box_w // 2, 0), width - box_w)
            y0 = min(max(y - box_h // 2, 0), height - box_h)
            box = (x0, y0, x0 + box_w, y0 + box_h)
            if not any(_overlap(box, tag.box) for tag in placed):
                return x0, y0
    return None


#: How many rings of spots around the deepest point a tag tries before giving up.
_RINGS = 4


def _ring(ring: int) -> list[tuple[int, int]]:
    """Offsets (in tag sizes) on the square ring ``ring`` around (0, 0), nearest first."""
    if ring == 0:
        return [(0, 0)]
    spots = [
        (dx, dy)
        for dx in range(-ring, ring + 1)
        for dy in range(-ring, ring + 1)
        if max(abs(dx), abs(dy)) == ring
    ]
    return sorted(spots, key=lambda d: (d[0] ** 2 + d[1] ** 2, d))


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def font_for(size: tuple[int, int]) -> Font:
    """Pillow's default font, about 1/80 of the image's longer side and never under 10 px."""
    return ImageFont.load_default(size=max(10, round(max(size) / 80)))


def pad_for(font: Font) -> int:
    return max(1, round(getattr(font, "size", 10) / 5))


def ink(color: RGB) -> RGB:
    """Black text on light colours, white on dark ones (ITU-R 601 luma)."""
    red, green, blue = color
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 140 else (255, 255, 255)


def _deepest_point(id_map: npt.NDArray[np.uint32], mark: Mark) -> tuple[int, int]:
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
