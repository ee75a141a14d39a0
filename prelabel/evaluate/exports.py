"""Reading COCO-panoptic exports from disk, and scoring one export against another.

File layout: what :class:`prelabel.formats.coco_panoptic.CocoPanopticWriter` writes
(``DIR/NAME.json`` beside a ``DIR/NAME/`` folder of PNGs, ``panoptic`` by default) or
panopticapi's convention (``X.json`` with the PNGs in ``X/``). PNG ids are
``R + 256*G + 65536*B``; RGBA PNGs (Segments.ai bitmaps) are read with the alpha ignored.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from prelabel.errors import ConfigError
from prelabel.evaluate.pq import VOID, PanopticFrame, PQAccumulator, PQResult
from prelabel.formats.bitmap import rgb_to_ids
from prelabel.progress import NullProgress, Progress
from prelabel.taxonomy import Category

__all__ = [
    "CocoPanopticFiles",
    "evaluate_coco_dirs",
    "locate_coco_panoptic",
    "read_coco_categories",
    "read_coco_panoptic",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CocoPanopticFiles:
    """Where one COCO-panoptic export lies: its JSON file and its folder of PNGs."""

    json_path: Path
    png_dir: Path


def locate_coco_panoptic(path: Path) -> CocoPanopticFiles:
    """Find the JSON and PNG folder of an export from what a user points at.

    Accepted, in this order:

    * ``X.json``: the PNGs are in ``X/`` (panopticapi's default);
    * a folder holding exactly one ``NAME.json`` beside a ``NAME/`` folder, as
      :class:`~prelabel.formats.coco_panoptic.CocoPanopticWriter` and ``prelabel predict`` write it
      (``panoptic.json`` and ``panoptic/``); other JSON files without such a folder, like
      ``report.json`` or ``evaluation.json``, are not candidates;
    * the PNG folder ``X/`` itself, when ``X.json`` lies beside it.

    Raises:
        ConfigError: nothing matches, or a folder holds several candidates (pass the JSON).
    """
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise ConfigError(f"{path}: expected a COCO-panoptic JSON file or a folder")
        png_dir = path.with_suffix("")
        if not png_dir.is_dir():
            raise ConfigError(f"{path}: the folder of PNGs {png_dir} beside it does not exist")
        return CocoPanopticFiles(path, png_dir)
    if not path.is_dir():
        raise ConfigError(f"{path}: no such file or folder")
    candidates = sorted(p for p in path.glob("*.json") if p.with_suffix("").is_dir())
    if len(candidates) == 1:
        return CocoPanopticFiles(candidates[0], candidates[0].with_suffix(""))
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise ConfigError(f"{path}: several COCO-panoptic exports ({names}); pass the JSON file")
    beside = path.with_suffix(".json") if path.suffix == "" else None
    if beside is not None and beside.is_file():
        return CocoPanopticFiles(beside, path)
    raise ConfigError(
        f"{path}: no COCO-panoptic export found; expected NAME.json beside a NAME/ folder of "
        "PNGs (prelabel predict writes panoptic.json and panoptic/)"
    )


@dataclass(frozen=True)
class _Entry:
    png_name: str
    segments: Mapping[int, int]
    crowd: int = 0


@dataclass(frozen=True)
class _Export:
    files: CocoPanopticFiles
    categories: tuple[Category, ...]
    entries: Mapping[str, _Entry]


def read_coco_categories(json_path: Path) -> tuple[Category, ...]:
    """The ``categories`` of a COCO-panoptic JSON (``isthing`` becomes ``has_instances``).

    Raises:
        ConfigError: the file cannot be read or parsed, or a category lacks id, name or isthing.
    """
    return _parse_categories(_load_json(Path(json_path)), Path(json_path))


def read_coco_panoptic(json_path: Path, png_dir: Path) -> Iterator[tuple[str, PanopticFrame]]:
    """Each annotated image of an export as ``(key, frame)``, in the JSON's order.

    The key is the image's ``file_name`` from ``images``, or its ``image_id`` as text when the
    image is not listed there. PNGs are read one at a time, as the iterator advances.

    Raises:
        ConfigError: the JSON is malformed, a key repeats, or a PNG is missing or unreadable.
    """
    export = _parse_export(CocoPanopticFiles(Path(json_path), Path(png_dir)))
    for key, entry in export.entries.items():
        yield key, _read_frame(export.files.png_dir, entry)


def evaluate_coco_dirs(
    pred_dir: Path, gt_dir: Path, *, progress: Progress | None = None
) -> PQResult:
    """PQ of one COCO-panoptic export against another, images matched by ``file_name``.

    Each path may be anything :func:`locate_coco_panoptic` accepts. The categories evaluated
    are the ground truth's (as in panopticapi); a predicted segment with another category is an
    error. Both exports must hold the same images: panopticapi refuses a ground-truth image
    without a prediction, and a prediction without ground truth usually means the two exports
    name their images differently, which silently evaluating the overlap would hide.

    Raises:
        ConfigError: a path holds no export, a file is malformed, the image sets differ, or an
            image pair is inconsistent (sizes differ, unknown ids or categories); the message
            names the file or image.
    """
    progress = progress or NullProgress()
    pred = _parse_export(locate_coco_panoptic(Path(pred_dir)))
    gt = _parse_export(locate_coco_panoptic(Path(gt_dir)))
    _check_same_images(pred, gt)
    _warn_category_differences(pred.categories, gt.categories)

    accumulator = PQAccumulator(gt.categories)
    progress.start(len(gt.entries), "evaluating")
    try:
        for key, gt_entry in gt.entries.items():
            pred_frame = _read_frame(pred.files.png_dir, pred.entries[key])
            gt_frame = _read_frame(gt.files.png_dir, gt_entry)
            try:
                accumulator.add(pred_frame, gt_frame)
            except ValueError as exc:
                raise ConfigError(f"image {key!r}: {exc}") from None
            progress.advance()
    finally:
        progress.close()
    for export in (gt, pred):
        crowd = sum(e.crowd for e in export.entries.values())
        if crowd:
            logger.warning(
                "%s: %d crowd segments (iscrowd=1) were evaluated as ordinary segments",
                export.files.json_path,
                crowd,
            )
    return accumulator.result()


def _load_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None


def _parse_categories(document: Any, path: Path) -> tuple[Category, ...]:
    raw = document.get("categories") if isinstance(document, dict) else None
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: no 'categories' list")
    categories = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or not {"id", "name", "isthing"} <= entry.keys():
            raise ConfigError(f"{path}: categories[{i}] lacks id, name or isthing")
        try:
            categories.append(
                Category(
                    id=int(entry["id"]),
                    name=str(entry["name"]),
                    has_instances=bool(int(entry["isthing"])),
                )
            )
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: categories[{i}] has a non-integer id or isthing") from None
    ids = [c.id for c in categories]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: a category id is listed twice")
    return tuple(categories)


def _parse_export(files: CocoPanopticFiles) -> _Export:
    path = files.json_path
    document = _load_json(path)
    categories = _parse_categories(document, path)
    annotations = document.get("annotations")
    if not isinstance(annotations, list):
        raise ConfigError(f"{path}: no 'annotations' list")
    names: dict[Any, str] = {}
    for image in document.get("images") or []:
        if isinstance(image, dict) and "id" in image and image.get("file_name"):
            names[image["id"]] = str(image["file_name"])
    entries: dict[str, _Entry] = {}
    for i, ann in enumerate(annotations):
        where = f"{path}: annotations[{i}]"
        if not isinstance(ann, dict) or not {"image_id", "file_name", "segments_info"} <= (
            ann.keys()
        ):
            raise ConfigError(f"{where} lacks image_id, file_name or segments_info")
        key = names.get(ann["image_id"], str(ann["image_id"]))
        if key in entries:
            raise ConfigError(f"{where}: image {key!r} is annotated twice")
        segments: dict[int, int] = {}
        crowd = 0
        for seg in ann["segments_info"] if isinstance(ann["segments_info"], list) else [None]:
            if not isinstance(seg, dict) or "id" not in seg or "category_id" not in seg:
                raise ConfigError(f"{where}: a segment lacks id or category_id")
            try:
                seg_id, category_id = int(seg["id"]), int(seg["category_id"])
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: segment {seg['id']!r} has a non-integer id") from None
            if seg_id == VOID or seg_id in segments:
                raise ConfigError(f"{where}: segment id {seg_id} is 0 or repeated")
            segments[seg_id] = category_id
            crowd += int(bool(seg.get("iscrowd")))
        entries[key] = _Entry(png_name=str(ann["file_name"]), segments=segments, crowd=crowd)
    return _Export(files=files, categories=categories, entries=entries)


def _read_frame(png_dir: Path, entry: _Entry) -> PanopticFrame:
    path = png_dir / entry.png_name
    try:
        with Image.open(path) as image:
            if image.mode not in {"RGB", "RGBA"}:
                raise ConfigError(f"{path}: a panoptic PNG must be RGB or RGBA, not {image.mode}")
            rgb = np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: the panoptic PNG is missing") from None
    except (OSError, UnidentifiedImageError) as exc:
        raise ConfigError(f"{path}: cannot read the panoptic PNG: {exc}") from None
    return PanopticFrame(id_map=rgb_to_ids(rgb), segments=entry.segments)


def _check_same_images(pred: _Export, gt: _Export) -> None:
    no_pred = [k for k in gt.entries if k not in pred.entries]
    no_gt = [k for k in pred.entries if k not in gt.entries]
    problems = []
    if no_pred:
        problems.append(f"{len(no_pred)} ground-truth images have no prediction: {_few(no_pred)}")
    if no_gt:
        problems.append(f"{len(no_gt)} predicted images have no ground truth: {_few(no_gt)}")
    if problems:
        raise ConfigError(
            f"the exports {pred.files.json_path} and {gt.files.json_path} hold different images "
            f"(matched by file_name): {'; '.join(problems)}"
        )


def _few(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _warn_category_differences(pred: Sequence[Category], gt: Sequence[Category]) -> None:
    gt_by_id = {c.id: c for c in gt}
    for cat in pred:
        other = gt_by_id.get(cat.id)
        if other is not None and (other.name, other.has_instances) != (
            cat.name,
            cat.has_instances,
        ):
            logger.warning(
                "category id %d is %r (isthing %d) in the predictions but %r (isthing %d) in "
                "the ground truth; the ground truth's is used",
                cat.id,
                cat.name,
                cat.has_instances,
                other.name,
                other.has_instances,
            )
