"""Image sequences for trials and tests: moving shapes with exact per-frame tracks, and seeding.

:func:`moving_shapes` draws a short clip: one shape per track moving in a straight line over a
plain background, painted on the image and, with its track id, on an id map, so every frame
comes with its exact ground truth (pixel value = track id, as a sequence label wants it,
shared/segments-api.md 10.6). :func:`seed_sequence_dataset` puts clips into an
``image-segmentation-sequence`` dataset whose frame images the emulator serves (a ``None``
frame gets a URL that answers 404); :func:`write_sequence_ground_truth` adds a person's label.

Pure drawing (Pillow and numpy): the same seed gives the same clip, pixel for pixel.
"""

from __future__ import annotations

import io
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from prelabel.emulator.api.urls import asset_url
from prelabel.emulator.seed import SeedResult, category_for_segments
from prelabel.emulator.server import Emulator
from prelabel.emulator.store.records import GROUND_TRUTH
from prelabel.formats.bitmap import segmentation_png
from prelabel.formats.sequence_label import FrameLabel, sequence_label_attributes

__all__ = [
    "SEQUENCE_TASK_TYPE",
    "FrameScene",
    "frame_timestamp",
    "moving_shapes",
    "seed_sequence_dataset",
    "write_sequence_ground_truth",
]

SEQUENCE_TASK_TYPE = "image-segmentation-sequence"
#: First frame's timestamp (nanoseconds, as the docs recommend) and the step (30 fps).
_T0_NS, _STEP_NS = 1_700_000_000_000_000_000, 33_333_333


@dataclass(frozen=True)
class FrameScene:
    """One frame: the RGB image, its ``(height, width)`` uint32 map of track ids (0 = nothing)
    and the category of each track id present in the map."""

    image: Image.Image
    id_map: npt.NDArray[np.uint32]
    annotations: dict[int, int]


def frame_timestamp(index: int) -> int:
    """The timestamp seeding gives frame ``index``."""
    return _T0_NS + index * _STEP_NS


def moving_shapes(
    n_frames: int = 3,
    *,
    category_ids: Sequence[int] = (1, 2),
    size: tuple[int, int] = (64, 48),
    sizes: Sequence[tuple[int, int]] | None = None,
    seed: int = 0,
    empty_frames: Collection[int] = (),
) -> list[FrameScene]:
    """A clip of ``n_frames``; track ``i + 1`` is a shape of category ``category_ids[i]``.

    Frame ``k`` is ``sizes[k]`` (width, height) if given, else ``size``; shapes move in
    fractions of the frame, so frames of different sizes show the same motion. Frames in
    ``empty_frames`` show the background only. A shape that leaves the frame is absent from
    that frame's map and annotations. Later tracks are drawn over earlier ones.
    """
    if sizes is not None and len(sizes) != n_frames:
        raise ValueError(f"{len(sizes)} sizes for {n_frames} frames")
    rng = np.random.default_rng(seed)
    red, green, blue = (int(c) for c in rng.integers(40, 90, 3))
    background = (red, green, blue)
    tracks = [
        (
            track_id,
            category_id,
            rng.uniform(0.1, 0.6, 2),  # top-left corner, as a fraction of the frame
            rng.uniform(-0.08, 0.08, 2),  # velocity per frame, same unit
            rng.uniform(0.2, 0.35, 2),  # extent
            tuple(int(c) for c in rng.integers(120, 256, 3)),
        )
        for track_id, category_id in enumerate(category_ids, start=1)
    ]
    frames = []
    for k in range(n_frames):
        width, height = sizes[k] if sizes is not None else size
        image = Image.new("RGB", (width, height), background)
        ids = Image.new("I", (width, height))
        paint, label = ImageDraw.Draw(image), ImageDraw.Draw(ids)
        categories: dict[int, int] = {}
        for track_id, category_id, start, velocity, extent, color in tracks:
            if k in empty_frames:
                break
            x0, y0 = (start + k * velocity) * (width, height)
            box = (x0, y0, x0 + extent[0] * width - 1, y0 + extent[1] * height - 1)
            draw = "ellipse" if track_id % 2 == 0 else "rectangle"
            getattr(paint, draw)(box, fill=color)
            getattr(label, draw)(box, fill=track_id)
            categories[track_id] = category_id
        id_map = np.asarray(ids, dtype=np.uint32)
        present = {int(i) for i in np.unique(id_map) if i}
        frames.append(
            FrameScene(image, id_map, {t: c for t, c in categories.items() if t in present})
        )
    return frames


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def seed_sequence_dataset(
    emulator: Emulator,
    dataset: str,
    sequences: Mapping[str, Sequence[FrameScene | None]],
    categories: Sequence[Mapping[str, Any]],
    *,
    timestamps: bool = True,
    task_type: str = SEQUENCE_TASK_TYPE,
) -> SeedResult:
    """Create ``dataset`` as an ``image-segmentation-sequence`` dataset (or ``task_type``, e.g.
    ``image-vector-sequence``), one sample per clip.

    Each frame image becomes an asset the emulator serves; a ``None`` frame gets a URL under
    the emulator's asset prefix that nothing was uploaded to (it answers 404). Frames are named
    ``frame_00000``, ... and, with ``timestamps``, carry :func:`frame_timestamp`.
    """
    kept = [category_for_segments(c) for c in categories]
    emulator.create_dataset(dataset, task_type=task_type, categories=kept)
    samples = []
    for name, clip in sequences.items():
        frames = []
        for index, scene in enumerate(clip):
            frame_name = f"frame_{index:05d}"
            if scene is None:
                url = asset_url(f"missing/{name}/{frame_name}.png", emulator.url)
            else:
                url = emulator.add_asset(_png(scene.image), f"{frame_name}.png")
            frame: dict[str, Any] = {"image": {"url": url}, "name": frame_name}
            if timestamps:
                frame["timestamp"] = frame_timestamp(index)
            frames.append(frame)
        samples.append({"name": name, "attributes": {"frames": frames}})
    uuids = emulator.add_samples(dataset, samples)
    return SeedResult(dataset, tuple(uuids), tuple(kept))


def write_sequence_ground_truth(
    emulator: Emulator,
    sample_uuid: str,
    frames: Sequence[FrameScene],
    *,
    labelset: str = GROUND_TRUTH,
    label_status: str = "LABELED",
    timestamps: bool = True,
) -> dict[str, Any] | None:
    """Label a seeded clip as a person would: one bitmap per frame, ``id == track_id``."""
    labels = [
        FrameLabel(
            asset_url=emulator.add_asset(segmentation_png(scene.id_map), f"gt-{index}.png"),
            annotations=[
                {"id": t, "track_id": t, "category_id": c, "is_keyframe": True}
                for t, c in sorted(scene.annotations.items())
            ],
            timestamp=frame_timestamp(index) if timestamps else None,
        )
        for index, scene in enumerate(frames)
    ]
    attributes = sequence_label_attributes(labels)
    return emulator.write_label(sample_uuid, labelset, attributes, label_status=label_status)
