"""Evaluate the pipeline on a box or polygon dataset's human labels: COCO-style AP.

The image-dataset evaluation (:mod:`prelabel.evaluate.dataset`) with shapes instead of a
panoptic map: the same samples (labels a person stands behind, :data:`HUMAN_LABEL_STATUSES`),
read-only, the run's own fetch and infer steps and failure policy; each prediction becomes the
boxes or polygons a run would write (:func:`~prelabel.formats.vector_label.scored_shapes`,
ranked by their segment's score) and :func:`~prelabel.evaluate.coco_ap.coco_ap` scores them
against the person's shapes of the dataset's type, per evaluated category.

An ``image-vector-sequence`` dataset (:func:`evaluate_vector_sequence_dataset`) is scored the
same way with each frame an image: the sequence streams through the sequence pipeline, each
frame's prediction becomes the shapes a run writes (``vector.sequence_type``, one per track)
and AP pools every frame of every sequence. It measures detection per frame, not whether a
track kept its id (that is STQ's, on bitmap sequences).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prelabel.config import Settings
from prelabel.evaluate.coco_ap import APResult, ScoredShape, VectorImage, coco_ap
from prelabel.evaluate.dataset import (
    HUMAN_LABEL_STATUSES,
    HumanLabeled,
    evaluated_categories,
    sample_failure,
    score_each,
)
from prelabel.formats.vector_label import VECTOR_KINDS, scored_shapes, segment_shapes
from prelabel.panoptic import PanopticPrediction
from prelabel.progress import Progress
from prelabel.run.frame_io import FrameIO, SequencePredictor, stream_frames
from prelabel.run.job import Job, RunOptions
from prelabel.run.outcome import SampleOutcome
from prelabel.run.policy import guarded
from prelabel.run.steps import FrameCallback, Predictor, SampleSteps, UploadCallback
from prelabel.segments.client import DatasetInfo, SegmentsApi
from prelabel.segments.samples import load_frame
from prelabel.taxonomy import Taxonomy

__all__ = ["VectorEvaluation", "evaluate_vector_dataset", "evaluate_vector_sequence_dataset"]


@dataclass(frozen=True)
class VectorEvaluation:
    """The AP of one dataset's evaluated samples, and the samples that could not be."""

    result: APResult
    kind: str
    not_human_labeled: int = 0
    failures: tuple[SampleOutcome, ...] = ()
    #: A stop signal ended it early: the scores cover the samples finished.
    interrupted: bool = False

    @property
    def evaluated(self) -> int:
        return self.result.images


def evaluate_vector_dataset(
    api: SegmentsApi,
    pipeline: Predictor,
    taxonomy: Taxonomy,
    info: DatasetInfo,
    *,
    labelset: str = "ground-truth",
    limit: int | None = None,
    settings: Settings | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> VectorEvaluation:
    """Predict on each human-labeled sample of the ``bboxes`` or ``vector`` dataset ``info``
    and score the shapes against the person's (as :func:`evaluate_dataset` does with PQ), on
    the run's driver: the same selection, failure policy and stop."""
    settings = settings or Settings()
    kind = VECTOR_KINDS[info.task_type]
    options = RunOptions(dataset=info.full_name, labelset=labelset)
    steps = SampleSteps(api, settings, options, taxonomy, lambda: pipeline)
    scoring = _Scoring(steps, kind, settings)
    selection = HumanLabeled(api, info.full_name, labelset, limit)
    return _scored(selection, scoring, kind, taxonomy, progress, should_stop)


@dataclass
class _Scoring:
    """The unit of a box/polygon evaluation: the run's fetch and infer, around reading the
    person's shapes (check, before the expensive prediction) and scoring them (deliver)."""

    steps: SampleSteps
    kind: str
    settings: Settings
    images: list[VectorImage] = field(default_factory=list)
    _truths: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def load_models(self) -> object:
        return self.steps.load_models()

    def check(self, job: Job) -> Job:
        return guarded(job, self.read_label)

    def fetch(self, job: Job) -> Job:
        return self.steps.fetch(job)

    def infer_batch(self, jobs: list[Job], record_frame: FrameCallback | None = None) -> list[Job]:
        return self.steps.infer_batch(jobs)

    def deliver(self, job: Job, record_upload: UploadCallback) -> Job:
        return guarded(job, self.score)

    def read_label(self, job: Job) -> None:
        frames = human_shapes(self.steps.api, self.steps.options.labelset, job)
        self._truths[job.sample.uuid] = frames[0]  # an image label: one frame

    def score(self, job: Job) -> None:
        if job.prediction is None:
            raise RuntimeError("score() before infer()")
        width, height = job.prediction.size
        predicted = [
            ScoredShape(shape, score)
            for shape, score in scored_shapes(job.prediction, self.kind, self.settings.vector)
        ]
        truth = self._truths.pop(job.sample.uuid)
        self.images.append(VectorImage(width, height, truth, predicted))
        job.finish("evaluated")


def evaluate_vector_sequence_dataset(
    api: SegmentsApi,
    pipeline: SequencePredictor,
    taxonomy: Taxonomy,
    info: DatasetInfo,
    *,
    labelset: str = "ground-truth",
    limit: int | None = None,
    settings: Settings | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> VectorEvaluation:
    """:func:`evaluate_vector_dataset` for an ``image-vector-sequence`` dataset: every frame
    of each human-labeled sequence is one image of the AP (``result.images`` counts frames)."""
    settings = settings or Settings()
    kind = settings.vector.sequence_type
    scoring = _SequenceScoring(api, pipeline, taxonomy, labelset, kind, settings)
    selection = HumanLabeled(api, info.full_name, labelset, limit)
    return _scored(selection, scoring, kind, taxonomy, progress, should_stop)


def _scored(
    selection: HumanLabeled,
    scoring: _Scoring | _SequenceScoring,
    kind: str,
    taxonomy: Taxonomy,
    progress: Progress | None,
    should_stop: Callable[[], bool],
) -> VectorEvaluation:
    """Every selected sample through ``scoring`` on the run's driver, then the AP of the
    images it kept, per evaluated category."""
    failures, summary = score_each(selection, scoring, progress, "evaluate", should_stop)
    categories = [c.id for c in evaluated_categories(taxonomy)]
    return VectorEvaluation(
        coco_ap(scoring.images, kind, categories),
        kind,
        selection.not_human_labeled,
        tuple(failures),
        summary.interrupted,
    )


def human_shapes(api: SegmentsApi, labelset: str, job: Job) -> list[list[dict[str, Any]]]:
    """The person's shapes of ``job``'s sample, per frame (one for an image), as COCO AP reads
    them; the sample fails if its label is no longer a person's or holds no shapes."""
    state = api.label_state(job.sample.uuid, labelset)
    if state.status not in HUMAN_LABEL_STATUSES:
        raise sample_failure(job, f"the label in {labelset!r} is no longer a person's")
    if not state.vector_key:
        raise sample_failure(job, "the label holds no boxes or polygons")
    # The label's content: (id, category, type, points) per annotation, per frame.
    return [
        [
            {"category_id": category, "type": kind, "points": [list(p) for p in points]}
            for _, category, kind, points in frame
        ]
        for frame in state.vector_key
    ]


@dataclass
class _SequenceScoring:
    """The unit of a box/polygon sequence evaluation: the person's frames read (check), the
    frames streamed through the sequence pipeline (infer), the sequence's frames added to the
    AP only once all of them are in (deliver), so a sequence failing half-way counts for
    nothing."""

    api: SegmentsApi
    pipeline: SequencePredictor
    taxonomy: Taxonomy
    labelset: str
    kind: str
    settings: Settings
    images: list[VectorImage] = field(default_factory=list)
    _truths: dict[str, list[list[dict[str, Any]]]] = field(default_factory=dict)
    _frames: dict[str, list[VectorImage]] = field(default_factory=dict)

    def load_models(self) -> object:
        return self.pipeline  # loaded by the caller

    def check(self, job: Job) -> Job:
        return guarded(job, self.read_label)

    def fetch(self, job: Job) -> Job:
        return job  # frames are read while predicting

    def infer_batch(self, jobs: list[Job], record_frame: FrameCallback | None = None) -> list[Job]:
        return [guarded(job, self.predict, in_model=True) for job in jobs]

    def deliver(self, job: Job, record_upload: UploadCallback) -> Job:
        return guarded(job, self.score)

    def read_label(self, job: Job) -> None:
        frames = human_shapes(self.api, self.labelset, job)
        if len(frames) != len(job.sample.frames):
            raise sample_failure(
                job, f"the label has {len(frames)} frames, the sample {len(job.sample.frames)}"
            )
        self._truths[job.sample.uuid] = frames

    def predict(self, job: Job) -> None:
        sample, max_pixels = job.sample, self.settings.pipeline.max_image_pixels
        truths = self._truths.pop(sample.uuid)
        frames: list[VectorImage] = []
        overlapped = self.settings.worker.engine == "overlapped"  # frame i+1 read ahead
        with FrameIO(overlapped=overlapped, in_flight=1, threads=1) as io:
            streamed = stream_frames(
                self.pipeline,
                self.taxonomy,
                lambda index: load_frame(self.api, sample, index, max_pixels=max_pixels),
                len(sample.frames),
                io,
            )
            for frame in streamed:
                prediction = frame.predicted.prediction
                width, height = prediction.size
                predicted = self._track_shapes(prediction)
                frames.append(VectorImage(width, height, truths[frame.index], predicted))
        self._frames[sample.uuid] = frames

    def _track_shapes(self, prediction: PanopticPrediction) -> list[ScoredShape]:
        """Each track's shape in this frame as a run writes it (its largest part only)."""
        seen: set[int] = set()
        shapes = []
        for seg, points in segment_shapes(prediction, self.kind, self.settings.vector):
            if seg.id not in seen:
                seen.add(seg.id)
                shape = {"category_id": seg.category_id, "type": self.kind, "points": points}
                shapes.append(ScoredShape(shape, seg.score))
        return shapes

    def score(self, job: Job) -> None:
        self.images.extend(self._frames.pop(job.sample.uuid))
        job.finish("evaluated")
