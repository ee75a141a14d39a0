"""The COCO-panoptic export of ``prelabel predict`` (read back by :mod:`prelabel.evaluate`).

COCO panoptic (as panopticapi and Segments' own export write it): one RGB PNG per image in which
a pixel's segment id is ``R + 256*G + 65536*B`` (0 = unlabeled), and one JSON file with
``images``, ``annotations`` (one per image, listing ``segments_info``) and ``categories``
(``isthing`` = ``has_instances``). The PNG ids here are the prediction's own segment ids, which
also fit the 24 bits of a Segments bitmap, so the two outputs name segments the same way.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

from PIL import Image

from prelabel.formats.atomic import atomic_file
from prelabel.formats.bitmap import ids_to_rgb
from prelabel.formats.label import check_prediction
from prelabel.formats.overlay import category_color
from prelabel.panoptic import PanopticPrediction
from prelabel.taxonomy import Taxonomy

__all__ = ["CocoPanopticWriter"]


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
        with atomic_file(path, "wb") as f:
            Image.fromarray(ids_to_rgb(prediction.id_map)).save(f, format="PNG")

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
            with atomic_file(self.json_path, "w") as f:
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


def _png_name(file_name: str) -> str:
    path = PurePosixPath(file_name.replace("\\", "/"))
    if not file_name or path.is_absolute() or ".." in path.parts or path.name in {"", "."}:
        raise ValueError(f"file_name must be a relative path inside the dataset, got {file_name!r}")
    return path.with_suffix(".png").as_posix()
