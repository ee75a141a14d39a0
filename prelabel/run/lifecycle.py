"""The per-sample lifecycle as engines see it: begin, fetch, infer, deliver, record.

An engine is a scheduler: it decides which thread or machine runs each stage and how many
samples are in flight, nothing else. What a stage does, which failures count and where the
outcome goes are the steps' (:mod:`prelabel.run.steps`), the policy's
(:mod:`prelabel.run.policy`) and the recorder's (:mod:`prelabel.run.recorder`). ``record``
writes outcomes and runs on the engine's calling thread; ``begin`` (take the lease, read the
resume record) and the I/O stages ``fetch`` and ``deliver`` may run in pools; ``infer`` runs
where the model is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Protocol

from prelabel.run.job import Job
from prelabel.run.recorder import Recorder
from prelabel.run.steps import SampleSteps
from prelabel.segments.client import SampleRef


class Lifecycle(Protocol):
    def begin(self, sample: SampleRef) -> Job: ...

    def fetch(self, job: Job) -> Job: ...

    def infer(self, jobs: list[Job]) -> list[Job]: ...

    def deliver(self, job: Job) -> Job: ...

    def record(self, job: Job) -> None: ...


@dataclass
class LocalLifecycle:
    """The lifecycle of a run on this machine: the steps, recorded by one recorder."""

    steps: SampleSteps
    recorder: Recorder

    def begin(self, sample: SampleRef) -> Job:
        return self.recorder.admit(sample)

    def fetch(self, job: Job) -> Job:
        with job.timed():
            return self.steps.fetch(self.steps.check(job))

    def infer(self, jobs: list[Job]) -> list[Job]:
        if any(not j.finished and j.pending is None and j.image is not None for j in jobs):
            self.steps.pipeline  # noqa: B018 - the models load before any sample's clock runs
        with ExitStack() as stack:
            for job in jobs:
                stack.enter_context(job.timed())
            return self.steps.infer_batch(jobs, self.recorder.record_frame)

    def deliver(self, job: Job) -> Job:
        with job.timed():
            return self.steps.deliver(job, self.recorder.record_upload)

    def record(self, job: Job) -> None:
        self.recorder.record(job)


def run_sequential(
    lifecycle: Lifecycle,
    samples: Iterable[SampleRef],
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """One sample at a time, every stage on this thread: the reference engine."""
    for sample in samples:
        if should_stop():
            return
        job = lifecycle.fetch(lifecycle.begin(sample))
        for inferred in lifecycle.infer([job]):
            lifecycle.record(lifecycle.deliver(inferred))
