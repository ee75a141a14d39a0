"""The unit of a review push: a reviewer's accepted predictions, through the run's driver.

Nothing is fetched or predicted: the accepted prediction (an image's, or every frame of a
sequence) stands in for the model's, and the run's steps deliver it (upload, re-read, safe
write). The driver admits each sample as ``prelabel run`` does (lease, resume record) and the
recorder records it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from functools import partial

from prelabel.panoptic import PanopticPrediction
from prelabel.run.job import Job
from prelabel.run.policy import guarded
from prelabel.run.sequence_steps import SequenceSteps
from prelabel.run.steps import FrameCallback, SampleSteps, UploadCallback
from prelabel.segments.client import SampleRef

#: An image's accepted prediction, or a sequence's, one per frame in order.
Accepted = PanopticPrediction | tuple[PanopticPrediction, ...]


class AcceptedPredictions:
    """The reviewer's predictions instead of the model's, delivered by ``steps``."""

    def __init__(self, steps: SampleSteps, items: Sequence[tuple[SampleRef, Accepted]]) -> None:
        self.steps = steps
        self._accepted: dict[str, deque[Accepted]] = {}
        for sample, accepted in items:
            self._accepted.setdefault(sample.uuid, deque()).append(accepted)

    def load_models(self) -> object:
        return None  # the predictions are the reviewer's

    def check(self, job: Job) -> Job:
        return job  # the write re-reads the label right before writing

    def fetch(self, job: Job) -> Job:
        return job

    def infer_batch(self, jobs: list[Job], record_frame: FrameCallback | None = None) -> list[Job]:
        report = record_frame or (lambda job, index: None)
        for job in jobs:
            accepted = self._accepted[job.sample.uuid].popleft()
            if job.finished:
                continue
            # What the reviewer accepted, not what an earlier run may have uploaded.
            job.pending, job.segments, job.frames = None, None, {}
            if isinstance(accepted, PanopticPrediction):
                job.prediction = accepted
            else:
                guarded(job, partial(self._put_frames, frames=accepted, record_frame=report))
        return jobs

    def deliver(self, job: Job, record_upload: UploadCallback) -> Job:
        return self.steps.deliver(job, record_upload)

    def _put_frames(
        self, job: Job, *, frames: tuple[PanopticPrediction, ...], record_frame: FrameCallback
    ) -> None:
        if not isinstance(self.steps, SequenceSteps):
            raise ValueError("a sequence's predictions pushed to an image dataset")
        self.steps.put_frames(job, enumerate(frames), record_frame)
