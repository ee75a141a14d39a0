"""Local mode: pre-label image files into a folder, no Segments.ai account needed.

Per image it writes the Segments bitmap (``bitmaps/<name>.png``, the RGBA id encoding the platform
imports), the annotations and score beside it (``labels/<name>.json``) and a preview
(``overlays/<name>.png``: the overlay with names, and a legend of every segment); for the run a
COCO-panoptic export (``panoptic/`` + ``panoptic.json``) and ``report.json`` with every image's
outcome, in the schema ``prelabel run`` writes (:class:`~prelabel.run.report.ReportWriter`). A
bad image is recorded with its reason and the run goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from prelabel.formats.atomic import write_json
from prelabel.formats.coco_panoptic import CocoPanopticWriter
from prelabel.formats.label import encode_label
from prelabel.formats.overlay import preview
from prelabel.images import decode_image
from prelabel.pipeline.pipeline import Pipeline
from prelabel.progress import NullProgress, Progress
from prelabel.run.outcome import SampleOutcome
from prelabel.run.policy import Failure, guarded
from prelabel.run.report import ReportWriter
from prelabel.segments.client import SampleRef
from prelabel.taxonomy import Taxonomy


@dataclass
class FileJob:
    """One image file through the policy's :func:`guarded`, as a sample is in a run."""

    sample: SampleRef
    outcome: SampleOutcome | None = None

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    def fail(self, failure: Failure) -> None:
        self.outcome = SampleOutcome(
            self.sample.uuid, self.sample.name, "failed", reason=failure.reason
        )


@dataclass(frozen=True)
class LocalReport:
    """Every file's outcome; ``sample_uuid`` of a local outcome is the file's path."""

    outcomes: tuple[SampleOutcome, ...]
    out_dir: Path

    @property
    def failed(self) -> list[SampleOutcome]:
        return [o for o in self.outcomes if o.result == "failed"]

    @property
    def succeeded(self) -> list[SampleOutcome]:
        return [o for o in self.outcomes if o.result != "failed"]


def predict_files(
    paths: Sequence[Path],
    *,
    pipeline: Pipeline,
    taxonomy: Taxonomy,
    out_dir: Path,
    progress: Progress | None = None,
) -> LocalReport:
    """Predict every image file and write the outputs described in the module docstring.

    A file that fails is recorded with its reason (the failure policy of a run: prelabel's
    errors by message, anything unexpected by type and message) and the rest goes on.
    """
    progress = progress or NullProgress()
    for sub in ("bitmaps", "labels", "overlays"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    writer = CocoPanopticWriter(out_dir, taxonomy)
    try:
        outcomes = run_each(
            paths,
            lambda path, name: _Predict(path, pipeline, taxonomy, out_dir, writer),
            progress,
            "predict",
        )
    finally:
        writer.close()
    report = LocalReport(outcomes=tuple(outcomes), out_dir=out_dir)
    ReportWriter(out_dir / "report.json", {"command": "predict"}).write_all(outcomes)
    return report


def run_each(
    paths: Sequence[Path],
    step_for: Callable[[Path, str], Callable[[FileJob], None]],
    progress: Progress,
    description: str,
) -> list[SampleOutcome]:
    """Each path (named by :func:`unique_names`) through its step under the run's failure
    policy, with a progress bar; every path gets an outcome, failed or not."""
    outcomes = []
    progress.start(len(paths), description)
    try:
        for path, name in zip(paths, unique_names(paths), strict=True):
            job = FileJob(SampleRef(str(path), name, image_url=None, label_status=None))
            outcome = guarded(job, step_for(path, name)).outcome
            assert outcome is not None
            outcomes.append(outcome)
            progress.advance()
            progress.note(failed=sum(o.result == "failed" for o in outcomes))
    finally:
        progress.close()
    return outcomes


@dataclass(frozen=True)
class _Predict:
    """The work on one file: decode, predict, encode, write its outputs."""

    path: Path
    pipeline: Pipeline
    taxonomy: Taxonomy
    out_dir: Path
    writer: CocoPanopticWriter

    def __call__(self, job: FileJob) -> None:
        start = time.perf_counter()
        name, out_dir = job.sample.name, self.out_dir
        image = decode_image(self.path, max_pixels=self.pipeline.settings.max_image_pixels)
        prediction = self.pipeline.predict(image, self.taxonomy)
        encoded = encode_label(prediction)
        (out_dir / "bitmaps" / f"{name}.png").write_bytes(encoded.png)
        write_json(
            out_dir / "labels" / f"{name}.json",
            {
                "image": str(self.path),
                "annotations": encoded.annotations,
                "score": encoded.score,
                "segments": [asdict(s) for s in prediction.segments],
            },
        )
        shown = preview(
            image, prediction, self.taxonomy, title=f"{name}: score {encoded.score:.2f}"
        )
        shown.save(out_dir / "overlays" / f"{name}.png")
        self.writer.add(f"{name}.png", prediction)
        job.outcome = SampleOutcome(
            job.sample.uuid,
            name,
            "predicted",
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
