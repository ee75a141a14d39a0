"""Evaluate the sequence pipeline on a sequence dataset's human labels: PQ per frame and STQ.

The rules of :mod:`prelabel.evaluate.dataset` hold (human-labeled samples only, read-only,
categories the config ignores are VOID, failures per sample under the run's policy); what
differs is that a sample is a sequence. Its frames stream through the sequence pipeline one by
one and each is scored against the same frame of the person's label as it comes out, so memory
does not grow with the sequence. A sequence that fails half-way (a frame that cannot be read)
counts for nothing: its frames are taken out of the totals again. The scores are
:class:`~prelabel.evaluate.sequence.STQAccumulator`'s: PQ of every frame (and its mean over
frames), and STQ, whose association part AQ sees whether an object kept its id.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prelabel.config import Settings
from prelabel.errors import RemoteError
from prelabel.evaluate.dataset import (
    HumanLabeled,
    evaluated_categories,
    ground_truth_frame,
    sample_failure,
    score_each,
)
from prelabel.evaluate.pq import PQResult, frame_from_prediction
from prelabel.evaluate.sequence import SequenceResult, STQAccumulator, ground_truth_id_map
from prelabel.progress import Progress
from prelabel.run.frame_io import FrameIO, SequencePredictor, stream_frames
from prelabel.run.job import Job
from prelabel.run.outcome import SampleOutcome
from prelabel.run.policy import guarded
from prelabel.run.steps import FrameCallback, UploadCallback
from prelabel.segments.client import SampleRef, SegmentsApi
from prelabel.segments.samples import load_frame
from prelabel.taxonomy import Taxonomy

__all__ = ["SequenceEvaluation", "evaluate_sequence_dataset"]


@dataclass(frozen=True)
class SequenceEvaluation:
    """The scores of one sequence evaluation and what was left out (as DatasetEvaluation)."""

    result: SequenceResult
    sequences: int
    not_human_labeled: int = 0
    failures: tuple[SampleOutcome, ...] = ()
    voided_segments: int = 0
    unannotated_pixels: int = 0
    #: A signal stopped it: the scores cover the sequences finished before.
    interrupted: bool = False

    @property
    def pq(self) -> PQResult:
        """PQ of all frames pooled."""
        return self.result.pq

    @property
    def evaluated(self) -> int:
        """Sequences scored."""
        return self.sequences

    def as_meta(self) -> dict[str, Any]:
        """The fields beside the PQ numbers in the JSON result."""
        result = self.result
        return {
            "samples": {
                "evaluated": self.sequences,
                "frames": result.pq.images,
                "failed": len(self.failures),
                "not_human_labeled": self.not_human_labeled,
            },
            "interrupted": self.interrupted,
            "tracking": {
                "metric": "STQ (Weber et al. 2021): sqrt(AQ * SQ)",
                "stq": result.stq,
                "aq": result.aq,
                "sq": result.sq,
                "mean_frame_pq": result.mean_frame_pq,
                "ground_truth_tracks": result.tracks,
            },
            "ground_truth_voided": {
                "segments_of_unevaluated_categories": self.voided_segments,
                "pixels_without_annotation": self.unannotated_pixels,
            },
            "failures": [
                {"sample_uuid": f.sample_uuid, "sample_name": f.sample_name, "reason": f.reason}
                for f in self.failures
            ],
        }


def evaluate_sequence_dataset(
    api: SegmentsApi,
    pipeline: SequencePredictor,
    taxonomy: Taxonomy,
    *,
    dataset: str,
    labelset: str = "ground-truth",
    limit: int | None = None,
    settings: Settings | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> SequenceEvaluation:
    """Predict every human-labeled sequence of ``dataset`` and score it frame by frame, on the
    run's driver (as :func:`~prelabel.evaluate.dataset.evaluate_dataset`).

    Raises:
        AuthError: the key was refused.
        RemoteError: the samples cannot be listed, or the server stays unreachable.
        ModelLoadError: the models cannot run at all.
    """
    categories = evaluated_categories(taxonomy)
    scoring = SequenceScoring(
        api,
        pipeline,
        taxonomy,
        labelset,
        settings or Settings(),
        STQAccumulator(categories),
        frozenset(c.id for c in categories),
    )
    selection = HumanLabeled(api, dataset, labelset, limit)
    failures, summary = score_each(selection, scoring, progress, "evaluate sequences", should_stop)
    return SequenceEvaluation(
        result=scoring.accumulator.result(),
        sequences=scoring.sequences,
        not_human_labeled=selection.not_human_labeled,
        failures=tuple(failures),
        voided_segments=scoring.voided_segments,
        unannotated_pixels=scoring.unannotated_pixels,
        interrupted=summary.interrupted,
    )


@dataclass
class SequenceScoring:
    """The unit of a sequence evaluation: the label's frames read (check), the sequence's
    frames streamed through the pipeline (:func:`~prelabel.run.frame_io.stream_frames`) and
    each scored as it comes out (infer); a sequence that fails half-way is rolled back."""

    api: SegmentsApi
    pipeline: SequencePredictor
    taxonomy: Taxonomy
    labelset: str
    settings: Settings
    accumulator: STQAccumulator
    #: Ids of the evaluated categories; ground truth of any other is VOID.
    evaluated: frozenset[int]
    sequences: int = 0
    voided_segments: int = 0
    unannotated_pixels: int = 0
    #: The label of each sequence in flight, by sample uuid (check -> infer).
    _labels: dict[str, list[tuple[dict[int, int], str | None]]] = field(default_factory=dict)

    def load_models(self) -> object:
        return self.pipeline  # loaded by the caller

    def check(self, job: Job) -> Job:
        return guarded(job, self._read_label)

    def fetch(self, job: Job) -> Job:
        return job  # frames are read while predicting

    def infer_batch(self, jobs: list[Job], record_frame: FrameCallback | None = None) -> list[Job]:
        return [guarded(job, self._score, in_model=True) for job in jobs]

    def deliver(self, job: Job, record_upload: UploadCallback) -> Job:
        self._labels.pop(job.sample.uuid, None)
        return guarded(job, lambda j: j.finish("evaluated"))

    def _read_label(self, job: Job) -> None:
        sample = job.sample
        label = self.api.label_frames(sample.uuid, self.labelset)
        if label is None:
            raise sample_failure(
                job, f"the label in {self.labelset!r} is gone (deleted since the listing)"
            )
        if len(label) != len(sample.frames):
            raise sample_failure(
                job, f"the label has {len(label)} frames, the sample {len(sample.frames)}"
            )
        self._labels[sample.uuid] = label

    def _score(self, job: Job) -> None:
        label = self._labels[job.sample.uuid]
        before = copy.deepcopy(self.accumulator), self.voided_segments, self.unannotated_pixels
        try:
            self._score_frames(job, job.sample, label)
        except BaseException:
            self.accumulator, self.voided_segments, self.unannotated_pixels = before
            raise
        self.accumulator.end_sequence()
        self.sequences += 1

    def _score_frames(
        self, job: Job, sample: SampleRef, label: list[tuple[dict[int, int], str | None]]
    ) -> None:
        max_pixels, worker = self.settings.pipeline.max_image_pixels, self.settings.worker
        io = FrameIO(
            overlapped=worker.engine == "overlapped",
            in_flight=worker.deliver_queue,
            threads=worker.deliver_workers,
        )
        with io:
            frames = stream_frames(
                self.pipeline,
                self.taxonomy,
                lambda index: load_frame(self.api, sample, index, max_pixels=max_pixels),
                len(sample.frames),
                io,
            )
            for frame in frames:
                prediction = frame.predicted.prediction
                annotations, url = label[frame.index]
                try:
                    id_map = ground_truth_id_map(self.api, url, prediction.size)
                except (RemoteError, ValueError) as exc:
                    raise sample_failure(job, f"frame {frame.index}: label bitmap: {exc}") from None
                truth, voided, unannotated = ground_truth_frame(id_map, annotations, self.evaluated)
                self.accumulator.add_frame(frame_from_prediction(prediction), truth)
                self.voided_segments += voided
                self.unannotated_pixels += unannotated
