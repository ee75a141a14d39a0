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
from dataclasses import dataclass
from typing import Any

from prelabel.config import Settings
from prelabel.errors import RemoteError
from prelabel.evaluate.dataset import (
    each_human_label,
    evaluated_categories,
    ground_truth_frame,
    sample_failure,
)
from prelabel.evaluate.pq import PQResult, frame_from_prediction
from prelabel.evaluate.sequence import SequenceResult, STQAccumulator, ground_truth_id_map
from prelabel.progress import NullProgress, Progress
from prelabel.run.job import Job
from prelabel.run.outcome import SampleOutcome
from prelabel.run.policy import guarded
from prelabel.run.sequence_steps import SequencePredictor
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
) -> SequenceEvaluation:
    """Predict every human-labeled sequence of ``dataset`` and score it frame by frame.

    Raises:
        AuthError: the key was refused.
        RemoteError: the samples cannot be listed, or the server stays unreachable.
        ModelLoadError: the models cannot run at all.
    """
    progress = progress or NullProgress()
    max_pixels = (settings or Settings()).pipeline.max_image_pixels
    categories = evaluated_categories(taxonomy)
    scoring = _SequenceScoring(
        api,
        pipeline,
        taxonomy,
        labelset,
        max_pixels,
        STQAccumulator(categories),
        frozenset(c.id for c in categories),
    )
    not_human, failures = each_human_label(
        api,
        dataset,
        labelset,
        lambda job: guarded(job, scoring.score),
        limit=limit,
        scored=lambda: scoring.sequences,
        progress=progress,
        description="evaluate sequences",
    )
    return SequenceEvaluation(
        result=scoring.accumulator.result(),
        sequences=scoring.sequences,
        not_human_labeled=not_human,
        failures=tuple(failures),
        voided_segments=scoring.voided_segments,
        unannotated_pixels=scoring.unannotated_pixels,
    )


@dataclass
class _SequenceScoring:
    """One sequence at a time into the accumulator; a failed one is rolled back."""

    api: SegmentsApi
    pipeline: SequencePredictor
    taxonomy: Taxonomy
    labelset: str
    max_pixels: int
    accumulator: STQAccumulator
    #: Ids of the evaluated categories; ground truth of any other is VOID.
    evaluated: frozenset[int]
    sequences: int = 0
    voided_segments: int = 0
    unannotated_pixels: int = 0

    def score(self, job: Job) -> None:
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
        before = copy.deepcopy(self.accumulator), self.voided_segments, self.unannotated_pixels
        try:
            self._score_frames(job, sample, label)
        except BaseException:
            self.accumulator, self.voided_segments, self.unannotated_pixels = before
            raise
        self.accumulator.end_sequence()
        self.sequences += 1
        job.finish("evaluated")

    def _score_frames(
        self, job: Job, sample: SampleRef, label: list[tuple[dict[int, int], str | None]]
    ) -> None:
        images = (
            load_frame(self.api, sample, i, max_pixels=self.max_pixels)
            for i in range(len(sample.frames))
        )
        for index, predicted in enumerate(self.pipeline.predict_frames(images, self.taxonomy)):
            annotations, url = label[index]
            try:
                id_map = ground_truth_id_map(self.api, url, predicted.prediction.size)
            except (RemoteError, ValueError) as exc:
                raise sample_failure(job, f"frame {index}: label bitmap: {exc}") from None
            truth, voided, unannotated = ground_truth_frame(id_map, annotations, self.evaluated)
            self.accumulator.add_frame(frame_from_prediction(predicted.prediction), truth)
            self.voided_segments += voided
            self.unannotated_pixels += unannotated
