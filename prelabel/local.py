"""Local mode: pre-label image files into a folder, no Segments.ai account needed.

Per image it writes the Segments bitmap (``bitmaps/<name>.png``, the RGBA id encoding the platform
imports), the annotations and score beside it (``labels/<name>.json``) and a colour overlay
(``overlays/<name>.jpg``); for the run a COCO-panoptic export (``panoptic/`` + ``panoptic.json``)
and ``report.json`` with every image's outcome. A bad image is recorded with its reason and the
run goes on.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from prelabel.encode import encode_label
from prelabel.errors import PrelabelError
from prelabel.export import CocoPanopticWriter, overlay
from prelabel.images import decode_image
from prelabel.pipeline.pipeline import Pipeline
from prelabel.progress import NullProgress, Progress
from prelabel.taxonomy import Taxonomy

logger = logging.getLogger(__name__)

#: Failures that belong to one image. Anything else is a bug and stops the run.
#: RuntimeError covers torch's errors on odd inputs (and CUDA out of memory on a huge image).
_PER_IMAGE_ERRORS = (PrelabelError, OSError, ValueError, RuntimeError)


@dataclass(frozen=True)
class ImageOutcome:
    """What happened to one input file; ``error`` is None on success."""

    path: str
    name: str
    segments: int = 0
    score: float = 0.0
    seconds: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class LocalReport:
    outcomes: tuple[ImageOutcome, ...]
    out_dir: Path

    @property
    def failed(self) -> list[ImageOutcome]:
        return [o for o in self.outcomes if o.error is not None]

    @property
    def succeeded(self) -> list[ImageOutcome]:
        return [o for o in self.outcomes if o.error is None]


def predict_files(
    paths: Sequence[Path],
    *,
    pipeline: Pipeline,
    taxonomy: Taxonomy,
    out_dir: Path,
    progress: Progress | None = None,
) -> LocalReport:
    """Predict every image file and write the outputs described in the module docstring."""
    progress = progress or NullProgress()
    for sub in ("bitmaps", "labels", "overlays"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    writer = CocoPanopticWriter(out_dir, taxonomy)
    names = unique_names(paths)
    outcomes = []
    progress.start(len(paths), "predict")
    try:
        for path, name in zip(paths, names, strict=True):
            outcome = _predict_one(path, name, pipeline, taxonomy, out_dir, writer)
            outcomes.append(outcome)
            progress.advance()
            progress.note(failed=sum(o.error is not None for o in outcomes))
    finally:
        progress.close()
        writer.close()
    report = LocalReport(outcomes=tuple(outcomes), out_dir=out_dir)
    _write_json(out_dir / "report.json", {"images": [asdict(o) for o in outcomes]})
    return report


def _predict_one(
    path: Path,
    name: str,
    pipeline: Pipeline,
    taxonomy: Taxonomy,
    out_dir: Path,
    writer: CocoPanopticWriter,
) -> ImageOutcome:
    start = time.perf_counter()
    try:
        image = decode_image(path, max_pixels=pipeline.settings.max_image_pixels)
        prediction = pipeline.predict(image, taxonomy)
        encoded = encode_label(prediction)
        (out_dir / "bitmaps" / f"{name}.png").write_bytes(encoded.png)
        _write_json(
            out_dir / "labels" / f"{name}.json",
            {
                "image": str(path),
                "annotations": encoded.annotations,
                "score": encoded.score,
                "segments": [asdict(s) for s in prediction.segments],
            },
        )
        overlay(image, prediction, taxonomy).save(out_dir / "overlays" / f"{name}.jpg", quality=90)
        writer.add(f"{name}.png", prediction)
    except _PER_IMAGE_ERRORS as exc:
        is_expected = isinstance(exc, PrelabelError)
        logger.error("%s: %s", path, exc, exc_info=not is_expected)
        reason = str(exc) if is_expected else f"{type(exc).__name__}: {exc}"
        return ImageOutcome(path=str(path), name=name, error=reason)
    return ImageOutcome(
        path=str(path),
        name=name,
        segments=len(prediction.segments),
        score=encoded.score,
        seconds=round(time.perf_counter() - start, 3),
    )


def unique_names(paths: Sequence[Path]) -> list[str]:
    """Output names from file stems; a repeated stem (same name in two folders) gets ``-2``..."""
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        stem = path.stem
        count = seen.get(stem, 0) + 1
        seen[stem] = count
        names.append(stem if count == 1 else f"{stem}-{count}")
    return names


def _write_json(path: Path, data: object) -> None:
    """Write to a temporary file and rename, so a killed run never leaves half a JSON."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)
