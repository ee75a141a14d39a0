"""Local mode: pre-label image files into a folder, no Segments.ai account needed.

Per image it writes the Segments bitmap (``bitmaps/<name>.png``, the RGBA id encoding the platform
imports), the annotations and score beside it (``labels/<name>.json``) and a preview
(``overlays/<name>.png``: the overlay with names, and a legend of every segment); for the run a
COCO-panoptic export (``panoptic/`` + ``panoptic.json``) and ``report.json`` with every image's
outcome, in the schema ``prelabel run`` writes (:class:`~prelabel.run.report.ReportWriter`).
With ``label_format`` ``bboxes`` or ``vector`` (:class:`VectorFileSteps`) ``labels/<name>.json``
is the box or polygon label instead, the preview outlines the shapes and the run's export is
COCO-instance (``instances.json``); there is no bitmap. A bad image is recorded with its reason
and the run goes on. Files go through the one driver
(:func:`~prelabel.run.driver.drive`) as samples of a run do: the unit is :class:`FileSteps`,
the sink a recorder without state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prelabel.config import VectorSettings
from prelabel.formats.atomic import write_json
from prelabel.formats.coco_instances import CocoInstancesWriter
from prelabel.formats.coco_panoptic import CocoPanopticWriter
from prelabel.formats.label import encode_label
from prelabel.formats.overlay import preview
from prelabel.formats.shape_overlay import shapes_preview
from prelabel.formats.vector_label import VECTOR_KINDS, encode_vector_label, segment_shapes
from prelabel.images import decode_image
from prelabel.pipeline.pipeline import Pipeline
from prelabel.progress import NullProgress, Progress
from prelabel.run.driver import drive
from prelabel.run.job import Job
from prelabel.run.lifecycle import Unit
from prelabel.run.outcome import SampleOutcome
from prelabel.run.policy import guarded
from prelabel.run.recorder import Recorder
from prelabel.run.report import ReportWriter, RunSummary
from prelabel.run.steps import FrameCallback, UploadCallback
from prelabel.segments.client import SampleRef
from prelabel.taxonomy import Taxonomy


@dataclass(frozen=True)
class LocalReport:
    """Every file's outcome; ``sample_uuid`` of a local outcome is the file's path.

    ``summary`` says whether a signal stopped it and how many files were left then.
    """

    outcomes: tuple[SampleOutcome, ...]
    out_dir: Path
    summary: RunSummary = field(default_factory=RunSummary)

    @property
    def failed(self) -> list[SampleOutcome]:
        return [o for o in self.outcomes if o.result == "failed"]

    @property
    def succeeded(self) -> list[SampleOutcome]:
        return [o for o in self.outcomes if o.result != "failed"]


#: ``prelabel predict --format``: what each image's label is.
LABEL_FORMATS = ("bitmap", "bboxes", "vector")


def predict_files(
    paths: Sequence[Path],
    *,
    pipeline: Pipeline,
    taxonomy: Taxonomy,
    out_dir: Path,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    label_format: str = "bitmap",
    vector: VectorSettings | None = None,
) -> LocalReport:
    """Predict every image file and write the outputs described in the module docstring.

    ``label_format`` ``bboxes`` or ``vector`` writes the label a box or polygon dataset takes
    instead (:class:`VectorFileSteps`, shapes per ``vector``). A file that fails is recorded
    with its reason (the failure policy of a run: prelabel's errors by message, anything
    unexpected by type and message) and the rest goes on. Once ``should_stop()`` is true no new
    file starts (the one in flight is finished).
    """
    if label_format not in LABEL_FORMATS:
        raise ValueError(f"label_format must be one of {LABEL_FORMATS}, got {label_format!r}")
    if label_format != "bitmap":
        return _predict_vector_files(
            paths,
            VectorFileSteps(
                pipeline, taxonomy, out_dir, VECTOR_KINDS[label_format], vector or VectorSettings()
            ),
            progress=progress,
            should_stop=should_stop,
        )
    for sub in ("bitmaps", "labels", "overlays"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    writer = CocoPanopticWriter(out_dir, taxonomy)
    try:
        return drive_files(
            paths,
            FileSteps(pipeline, taxonomy, out_dir, writer),
            out_dir=out_dir,
            command="predict",
            description="predict",
            progress=progress,
            should_stop=should_stop,
        )
    finally:
        writer.close()


def _predict_vector_files(
    paths: Sequence[Path],
    steps: VectorFileSteps,
    *,
    progress: Progress | None,
    should_stop: Callable[[], bool],
) -> LocalReport:
    """:func:`predict_files` for boxes or polygons; ``instances.json`` is written whatever
    happens, so the images done before a stop or a crash are exported."""
    for sub in ("labels", "overlays"):
        (steps.out_dir / sub).mkdir(parents=True, exist_ok=True)
    try:
        return drive_files(
            paths,
            steps,
            out_dir=steps.out_dir,
            command="predict",
            description="predict",
            progress=progress,
            should_stop=should_stop,
        )
    finally:
        steps.instances.close()


def drive_files(
    paths: Sequence[Path],
    unit: Unit,
    *,
    out_dir: Path,
    command: str,
    description: str,
    progress: Progress | None,
    should_stop: Callable[[], bool],
) -> LocalReport:
    """Each path (named by :func:`unique_names`) through ``unit`` on the one driver, with a
    progress bar and ``report.json``; every path started gets an outcome, failed or not."""
    outcomes: list[SampleOutcome] = []
    recorder = Recorder.outcomes_only(
        report=ReportWriter(out_dir / "report.json", {"command": command}),
        progress=progress or NullProgress(),
        on_outcome=outcomes.append,
    )
    samples = [
        SampleRef(str(path), name, image_url=None, label_status=None)
        for path, name in zip(paths, unique_names(paths), strict=True)
    ]
    summary = drive(
        samples,
        unit,
        recorder,
        should_stop=should_stop,
        expected=len(samples),
        description=description,
    )
    return LocalReport(outcomes=tuple(outcomes), out_dir=out_dir, summary=summary)


class FileSteps:
    """The unit of ``prelabel predict``: an image file decoded, predicted and its outputs
    written (bitmap, annotations, preview, COCO-panoptic entry) in the deliver step."""

    def __init__(
        self,
        pipeline: Pipeline,
        taxonomy: Taxonomy,
        out_dir: Path,
        writer: CocoPanopticWriter | None,
    ) -> None:
        self.pipeline = pipeline
        self.taxonomy = taxonomy
        self.out_dir = out_dir
        self.writer = writer

    def load_models(self) -> object:
        return self.pipeline  # loaded by the caller

    def check(self, job: Job) -> Job:
        return job  # a local file has no label that could change meanwhile

    def fetch(self, job: Job) -> Job:
        return guarded(job, self._decode)

    def infer_batch(self, jobs: list[Job], record_frame: FrameCallback | None = None) -> list[Job]:
        return [guarded(job, self._predict, in_model=True) for job in jobs]

    def deliver(self, job: Job, record_upload: UploadCallback) -> Job:
        return guarded(job, self._write)

    def _decode(self, job: Job) -> None:
        max_pixels = self.pipeline.settings.max_image_pixels
        job.image = decode_image(Path(job.sample.uuid), max_pixels=max_pixels)

    def _predict(self, job: Job) -> None:
        if job.image is not None:  # kept: the preview draws on it
            job.prediction = self.pipeline.predict(job.image, self.taxonomy)

    def _write(self, job: Job) -> None:
        image, prediction = job.image, job.prediction
        if image is None or prediction is None:
            raise RuntimeError("deliver() before infer()")
        name, out_dir = job.sample.name, self.out_dir
        encoded = encode_label(prediction)
        (out_dir / "bitmaps" / f"{name}.png").write_bytes(encoded.png)
        write_json(
            out_dir / "labels" / f"{name}.json",
            {
                "image": job.sample.uuid,
                "annotations": encoded.annotations,
                "score": encoded.score,
                "segments": [asdict(s) for s in prediction.segments],
            },
        )
        shown = preview(
            image, prediction, self.taxonomy, title=f"{name}: score {encoded.score:.2f}"
        )
        shown.save(out_dir / "overlays" / f"{name}.png")
        if self.writer is not None:
            self.writer.add(f"{name}.png", prediction)
        job.segments = len(prediction.segments)
        job.finish("predicted", score=encoded.score)


class VectorFileSteps(FileSteps):
    """:class:`FileSteps` writing a box or polygon label per image: ``labels/<name>.json`` is
    the label attributes a ``bboxes`` or ``vector`` dataset takes (shared/segments-api.md
    12.2, the encoder ``prelabel run`` writes with), the preview outlines each shape, and
    every shape goes into the run's ``instances.json`` with its detection score.

    No dataset declares a score attribute here, so ``vector.score_attribute``, when set, is
    given to every category's annotations.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        taxonomy: Taxonomy,
        out_dir: Path,
        kind: str,
        vector: VectorSettings,
    ) -> None:
        super().__init__(pipeline, taxonomy, out_dir, None)
        self.kind = kind
        self.vector = vector
        self.instances = CocoInstancesWriter(out_dir / "instances.json", taxonomy, kind)
        self.scored = frozenset(cat.id for cat in taxonomy.categories)

    def _write(self, job: Job) -> None:
        image, prediction = job.image, job.prediction
        if image is None or prediction is None:
            raise RuntimeError("deliver() before infer()")
        name, out_dir = job.sample.name, self.out_dir
        shapes = segment_shapes(prediction, self.kind, self.vector)
        encoded = encode_vector_label(
            prediction, self.kind, self.vector, scored_categories=self.scored, shapes=shapes
        )
        write_json(out_dir / "labels" / f"{name}.json", encoded.attributes)
        title = f"{name}: score {encoded.score:.2f}"
        shown = shapes_preview(image, prediction, shapes, self.kind, self.taxonomy, title=title)
        shown.save(out_dir / "overlays" / f"{name}.png")
        self.instances.add(
            job.sample.uuid,
            prediction.size,
            encoded.attributes["annotations"],
            [seg.score for seg, _ in shapes],
        )
        job.segments = encoded.objects
        job.finish("predicted", score=encoded.score)


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
