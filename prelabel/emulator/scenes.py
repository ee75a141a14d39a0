"""Street-like scenes drawn from shapes, with their exact panoptic ground truth.

The demo needs images that anyone may use (nothing downloaded, no licence to carry) and that
look enough like a street for an overlay to mean something: sky above, buildings and trees on
the horizon, a sidewalk, a road with lane marks, a few cars and people drawn as shapes. Every
shape is painted twice, in colour on the image and as its segment id on an id map, so the scene
comes with the label a careful person would draw: the demo seeds some samples with it as a
human label, and ``prelabel evaluate`` and the notebook's "measure" have real numbers to show.

Pure drawing (Pillow and numpy): the same seed gives the same scene, pixel for pixel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

__all__ = ["SCENE_CATEGORIES", "Scene", "street_scene"]

#: Category names a scene paints, as the street-scene taxonomy spells them (stuff, then things).
SCENE_CATEGORIES = ("sky", "building", "vegetation", "sidewalk", "road", "car", "person")

RGB = tuple[int, int, int]
#: ``(left, top, right, bottom)`` in pixels, as ImageDraw takes it.
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Scene:
    """An RGB street scene and its ground truth, in the shape of a Segments bitmap label.

    ``id_map`` is ``(height, width)`` uint32, 0 nowhere (every pixel belongs to a segment);
    ``annotations`` maps each id present in it to its category id. Stuff has one id per
    category, every car and person its own.
    """

    image: Image.Image
    id_map: npt.NDArray[np.uint32]
    annotations: dict[int, int]


class _Canvas:
    """Paints each shape on the image and, with its segment id, on the id map."""

    def __init__(self, size: tuple[int, int], category_ids: Mapping[str, int]) -> None:
        self.image = Image.new("RGB", size)
        self.ids = Image.new("I", size)
        self.paint, self.label = ImageDraw.Draw(self.image), ImageDraw.Draw(self.ids)
        self.category_ids = category_ids
        self.annotations: dict[int, int] = {}
        self._stuff: dict[str, int] = {}

    def segment(self, category: str) -> int:
        """The id to paint ``category`` with: the same for stuff, a new one for each thing."""
        if category in self._stuff:
            return self._stuff[category]
        seg_id = len(self.annotations) + 1
        self.annotations[seg_id] = self.category_ids[category]
        if category not in ("car", "person"):
            self._stuff[category] = seg_id
        return seg_id

    def rect(self, box: Box, color: RGB, seg_id: int) -> None:
        self.paint.rectangle(box, fill=color)
        self.label.rectangle(box, fill=seg_id)

    def ellipse(self, box: Box, color: RGB, seg_id: int) -> None:
        self.paint.ellipse(box, fill=color)
        self.label.ellipse(box, fill=seg_id)

    def polygon(self, points: Sequence[tuple[float, float]], color: RGB, seg_id: int) -> None:
        self.paint.polygon(list(points), fill=color)
        self.label.polygon(list(points), fill=seg_id)


def street_scene(
    seed: int, category_ids: Mapping[str, int], size: tuple[int, int] = (384, 256)
) -> Scene:
    """Draw scene number ``seed`` at ``size`` (width, height).

    ``category_ids`` gives the dataset's id for each name in :data:`SCENE_CATEGORIES`.

    Raises:
        KeyError: a name of :data:`SCENE_CATEGORIES` is missing from ``category_ids``.
    """
    missing = [name for name in SCENE_CATEGORIES if name not in category_ids]
    if missing:
        raise KeyError(f"no category id for {', '.join(missing)}")
    rng = np.random.default_rng(seed)
    width, height = size
    canvas = _Canvas(size, category_ids)
    horizon = round(height * rng.uniform(0.38, 0.48))
    curb = horizon + max(2, round(height * 0.08))
    _sky(canvas, rng, horizon)
    _skyline(canvas, rng, horizon)
    _trees(canvas, rng, horizon)
    canvas.rect((0, horizon, width, curb), (172, 168, 160), canvas.segment("sidewalk"))
    _road(canvas, rng, curb)
    figures = [("car", rng.uniform(curb + 4, height * 0.8)) for _ in range(rng.integers(1, 4))]
    figures += [("person", rng.uniform(horizon + 2, curb + 6)) for _ in range(rng.integers(1, 4))]
    for kind, base in sorted(figures, key=lambda f: f[1]):  # far first: near ones occlude
        (_car if kind == "car" else _person)(canvas, rng, base)
    id_map = np.asarray(canvas.ids, dtype=np.uint32)
    present = {int(i) for i in np.unique(id_map)}
    noise = rng.normal(0.0, 4.0, (height, width, 3))
    pixels = np.clip(np.asarray(canvas.image, dtype=np.float64) + noise, 0, 255)
    return Scene(
        image=Image.fromarray(pixels.astype(np.uint8)),
        id_map=id_map,
        annotations={i: c for i, c in canvas.annotations.items() if i in present},
    )


def _sky(canvas: _Canvas, rng: np.random.Generator, horizon: int) -> None:
    width = canvas.image.width
    top, bottom = np.array([70, 120, 200]), np.array([170, 205, 235]) + rng.integers(-10, 10, 3)
    seg_id = canvas.segment("sky")
    for y in range(horizon):
        color = top + (bottom - top) * (y / max(horizon - 1, 1))
        canvas.rect((0, y, width, y), (int(color[0]), int(color[1]), int(color[2])), seg_id)


def _skyline(canvas: _Canvas, rng: np.random.Generator, horizon: int) -> None:
    width, height = canvas.image.size
    seg_id = canvas.segment("building")
    x = float(rng.uniform(-20, 0))
    while x < width:
        w = rng.uniform(0.1, 0.25) * width
        top = horizon - rng.uniform(0.15, 0.35) * height
        shade = int(rng.integers(90, 170))
        wall = (shade, shade - int(rng.integers(0, 25)), shade - int(rng.integers(0, 40)))
        canvas.rect((x, top, x + w, horizon), wall, seg_id)
        glass = (40, 50, 70) if rng.random() < 0.5 else (210, 200, 150)
        for wy in np.arange(top + 5, horizon - 8, 12):
            for wx in np.arange(x + 5, x + w - 8, 11):
                canvas.rect((wx, wy, wx + 5, wy + 6), glass, seg_id)
        x += w + rng.uniform(0, 6)


def _trees(canvas: _Canvas, rng: np.random.Generator, horizon: int) -> None:
    width, height = canvas.image.size
    seg_id = canvas.segment("vegetation")
    for _ in range(rng.integers(0, 3)):
        cx, r = rng.uniform(0, width), rng.uniform(0.05, 0.09) * height
        canvas.rect((cx - r / 5, horizon - 2 * r, cx + r / 5, horizon), (90, 60, 30), seg_id)
        canvas.ellipse(
            (cx - r, horizon - 3.5 * r, cx + r, horizon - 1.5 * r), (60, 120, 40), seg_id
        )


def _road(canvas: _Canvas, rng: np.random.Generator, curb: int) -> None:
    width, height = canvas.image.size
    seg_id = canvas.segment("road")
    canvas.rect((0, curb, width, height), (88, 88, 92), seg_id)
    lane = curb + (height - curb) * rng.uniform(0.45, 0.6)
    for x in np.arange(rng.uniform(0, 20), width, 44):
        canvas.rect((x, lane, x + 22, lane + 3), (230, 230, 220), seg_id)


def _car(canvas: _Canvas, rng: np.random.Generator, base: float) -> None:
    """A car whose wheels touch ``base``; nearer (lower) cars are drawn larger."""
    width, height = canvas.image.size
    scale = 0.5 + base / height
    w, h = 0.22 * width * scale, 0.09 * height * scale
    x = rng.uniform(-0.1 * w, width - 0.9 * w)
    paint = (int(rng.integers(20, 230)), int(rng.integers(20, 230)), int(rng.integers(20, 230)))
    seg_id = canvas.segment("car")
    body_top = base - h
    canvas.rect((x, body_top, x + w, base - 0.25 * h), paint, seg_id)
    cabin = [(x + 0.2 * w, body_top), (x + 0.3 * w, body_top - 0.6 * h)]
    cabin += [(x + 0.7 * w, body_top - 0.6 * h), (x + 0.82 * w, body_top)]
    canvas.polygon(cabin, (60, 80, 100), seg_id)
    for wx in (x + 0.2 * w, x + 0.8 * w):
        r = 0.25 * h
        canvas.ellipse((wx - r, base - 2 * r, wx + r, base), (20, 20, 20), seg_id)


def _person(canvas: _Canvas, rng: np.random.Generator, base: float) -> None:
    """A person standing on ``base``: head, torso and two legs."""
    width, height = canvas.image.size
    tall = 0.2 * height * (0.6 + base / height)
    x = rng.uniform(0.03, 0.97) * width
    seg_id = canvas.segment("person")
    shirt = (int(rng.integers(30, 250)), int(rng.integers(30, 250)), int(rng.integers(30, 250)))
    head, top, hips = tall * 0.16, base - tall, base - tall * 0.45
    canvas.ellipse((x - head / 2, top, x + head / 2, top + head), (225, 180, 150), seg_id)
    canvas.rect((x - tall * 0.12, top + head, x + tall * 0.12, hips), shirt, seg_id)
    for dx in (-tall * 0.1, tall * 0.02):
        canvas.rect((x + dx, hips, x + dx + tall * 0.08, base), (40, 40, 60), seg_id)
