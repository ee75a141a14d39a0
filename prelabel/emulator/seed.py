"""Seed an emulator dataset from a folder of images and a categories file.

Lets a person try the connector without a Segments account: ``prelabel emulator --seed-images
DIR --categories FILE --dataset OWNER/NAME`` creates the dataset with those categories and one
unlabeled sample per image, exactly as if they had been uploaded through the web app.

The categories file is the project's taxonomy YAML, ``categories: [{id, name, has_instances,
color, ...}]``. Keys that only the pipeline uses (``prompt``, thresholds, ``ignore``...) are not
part of a Segments dataset, so only ``id``, ``name``, ``color`` and ``has_instances`` are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prelabel.emulator.server import Emulator
from prelabel.emulator.wire import ApiError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
_CATEGORY_KEYS = ("id", "name", "color", "has_instances")


@dataclass(frozen=True)
class SeedResult:
    """What :func:`seed_dataset` created."""

    dataset: str
    sample_uuids: tuple[str, ...]
    categories: tuple[dict[str, Any], ...]


def category_for_segments(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One taxonomy entry reduced to the fields a Segments category has.

    Raises:
        ValueError: if ``id`` is not a positive int or ``name`` is missing; ids >= 1 keep the
            semantic map's 0 unambiguous as background (spec section 5).
    """
    category_id, name = entry.get("id"), entry.get("name")
    if type(category_id) is not int or category_id < 1:
        raise ValueError(f"category id must be an int >= 1, got {category_id!r}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"category {category_id} has no name")
    category = {key: entry[key] for key in _CATEGORY_KEYS if key in entry}
    if "color" in category:
        category["color"] = [int(channel) for channel in category["color"]]
    return category


def load_categories(path: Path) -> list[dict[str, Any]]:
    """Read ``categories:`` (or a bare list) from a YAML file, as Segments categories."""
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    entries = data.get("categories") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty 'categories' list")
    categories = [category_for_segments(entry) for entry in entries]
    ids = [c["id"] for c in categories]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: category ids must be unique, got {ids}")
    return categories


def find_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name (sample order = file order)."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a directory")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ValueError(f"{folder} contains no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return images


def seed_dataset(
    emulator: Emulator,
    dataset: str,
    images: Sequence[Path],
    categories: Sequence[Mapping[str, Any]],
    task_type: str = "segmentation-bitmap",
) -> SeedResult:
    """Create ``dataset`` (``owner/name``) with ``categories`` and one sample per image.

    Each image becomes a public asset and a sample named after the file, with metadata
    ``{"source": "seed"}``. The emulator must be running (asset URLs need its address).
    """
    owner, slash, name = dataset.partition("/")
    if not slash or not owner or not name or "/" in name:
        raise ValueError(f"dataset must be OWNER/NAME, got {dataset!r}")
    kept = [category_for_segments(c) for c in categories]
    try:
        emulator.create_dataset(dataset, task_type=task_type, categories=kept)
    except ApiError as error:  # e.g. an unknown task type or a bad dataset name
        raise ValueError(f"cannot create {dataset}: {error.body}") from error
    samples = [
        {
            "name": image.name,
            "attributes": {"image": {"url": emulator.add_asset(image.read_bytes(), image.name)}},
            "metadata": {"source": "seed"},
        }
        for image in images
    ]
    uuids = emulator.add_samples(dataset, samples)
    logger.info("seeded %s with %d samples", dataset, len(uuids))
    return SeedResult(dataset, tuple(uuids), tuple(kept))
