"""Local outputs of ``prelabel predict``: colour previews and a COCO-panoptic export.

COCO panoptic (as panopticapi and Segments' own export write it): one RGB PNG per image in which
a pixel's segment id is ``R + 256*G + 65536*B`` (0 = unlabeled), and one JSON file with
``images``, ``annotations`` (one per image, listing ``segments_info``) and ``categories``
(``isthing`` = ``has_instances``). The PNG ids here are the prediction's own segment ids, which
also fit the 24 bits of a Segments bitmap, so the two outputs name segments the same way.

Colours follow panopticapi: a category's colour for stuff and for the first instance of a
thing, a jittered variant of it for the later instances. Unlike panopticapi the jitter is seeded
by (category, instance), so a preview looks the same on every run.
"""

from __future__ import annotations

import colorsys
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO, Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from prelabel.encode import check_prediction
from prelabel.panoptic import PanopticPrediction
from prelabel.taxonomy import Category, Taxonomy

__all__ = ["CocoPanopticWriter", "category_color", "colorize", "overlay"]

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


class CocoPanopticWriter:
    """Accumulates one COCO-panoptic export: call add() per image, then close() writes the JSON.

    PNGs go to ``out_dir/<name>/`` as they are added; only the small per-image segment lists
    stay in memory, so memory is flat over thousands of images. Every file is written to a
    temporary name and moved into place, so a crash never leaves a half-written file under the
    final name. Also a context manager that closes on exit.
    """

    def __init__(self, out_dir: Path, taxonomy: Taxonomy, name: str = "panoptic") -> None:
        if not name or "/" in name or "\\" in name or name in {".", ".."}:
            raise ValueError(f"name must be a plain file name, got {name!r}")
        self.taxonomy = taxonomy
        self.png_dir = Path(out_dir) / name
        self.json_path = Path(out_dir) / f"{name}.json"
        self.png_dir.mkdir(parents=True, exist_ok=True)
        self._images: list[dict[str, Any]] = []
        self._annotations: list[dict[str, Any]] = []
        self._image_ids: set[int] = set()
        self._png_names: set[str] = set()
        self._closed = False

    def add(
        self, file_name: str, prediction: PanopticPrediction, image_id: int | None = None
    ) -> None:
        """Write one image's panoptic PNG now and remember its segments for the JSON.

        ``file_name`` is the image's name relative to the dataset root (subfolders allowed);
        the PNG gets the same relative name with a ``.png`` suffix. ``image_id`` defaults to one
        more than the largest id used so far.

        Raises:
            RuntimeError: the writer is closed.
            ValueError: the prediction breaks its contract, the image id or PNG name is
                already used, or ``file_name`` is absolute or climbs out with ``..``.
        """
        if self._closed:
            raise RuntimeError("CocoPanopticWriter is closed; create a new writer to add images")
        png_name = _png_name(file_name)
        if png_name in self._png_names:
            raise ValueError(f"{file_name!r}: the panoptic PNG {png_name!r} is already written")
        if image_id is None:
            image_id = max(self._image_ids, default=0) + 1
        elif image_id in self._image_ids:
            raise ValueError(f"{file_name!r}: image id {image_id} is already used")
        check_prediction(prediction)

        path = self.png_dir / png_name
        path.parent.mkdir(parents=True, exist_ok=True)
        with _atomic(path, "wb") as f:
            Image.fromarray(_id_map_to_rgb(prediction.id_map)).save(f, format="PNG")

        width, height = prediction.size
        self._images.append(
            {"id": image_id, "file_name": file_name, "width": width, "height": height}
        )
        self._annotations.append(
            {
                "image_id": image_id,
                "file_name": png_name,
                "segments_info": [
                    {
                        "id": seg.id,
                        "category_id": seg.category_id,
                        "iscrowd": 0,
                        "bbox": list(seg.bbox),
                        "area": seg.area,
                    }
                    for seg in sorted(prediction.segments, key=lambda s: s.id)
                ],
            }
        )
        self._image_ids.add(image_id)
        self._png_names.add(png_name)

    def close(self) -> Path:
        """Write the JSON (all taxonomy categories, ignored ones included) and return its path.

        Calling it again rewrites nothing and returns the same path.
        """
        if not self._closed:
            document = {
                "images": self._images,
                "annotations": self._annotations,
                "categories": [
                    {
                        "id": cat.id,
                        "name": cat.name,
                        "isthing": int(cat.has_instances),
                        "color": list(category_color(cat, 0)),
                    }
                    for cat in self.taxonomy.categories
                ],
            }
            with _atomic(self.json_path, "w") as f:
                json.dump(document, f)
            self._closed = True
        return self.json_path

    def __enter__(self) -> CocoPanopticWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Also on error: the PNGs already written stay described by a valid JSON.
        self.close()


def _base_color(category: Category) -> RGB:
    if category.color is not None and len(category.color) >= 3:
        r, g, b = (int(np.clip(c, 0, 255)) for c in category.color[:3])
        return r, g, b
    hue = (category.id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.65, 0.95)
    return round(r * 255), round(g * 255), round(b * 255)


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


def _id_map_to_rgb(id_map: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint8]:
    """``id = R + 256*G + 65536*B``: the low three bytes of each id, little-endian explicitly."""
    le = np.ascontiguousarray(id_map, dtype="<u4")
    return np.ascontiguousarray(le.view(np.uint8).reshape(*id_map.shape, 4)[:, :, :3])


def _png_name(file_name: str) -> str:
    path = PurePosixPath(file_name.replace("\\", "/"))
    if not file_name or path.is_absolute() or ".." in path.parts or path.name in {"", "."}:
        raise ValueError(f"file_name must be a relative path inside the dataset, got {file_name!r}")
    return path.with_suffix(".png").as_posix()


@contextmanager
def _atomic(path: Path, mode: str) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success move it over ``path``, else delete it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
