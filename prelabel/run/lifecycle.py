"""The per-sample lifecycle as engines see it: begin, fetch, infer, deliver, record.

A sample goes through two collaborators, composed (not subclassed) by :class:`Stages`:

* a **unit** (:class:`Unit`) knows one kind of sample and its steps: an image or an image
  sequence on Segments (:class:`~prelabel.run.steps.SampleSteps`,
  :class:`~prelabel.run.sequence_steps.SequenceSteps`), a file or a folder of frames
  (:mod:`prelabel.local`, :mod:`prelabel.local_sequences`), a human-labeled image or sequence
  to score (:mod:`prelabel.evaluate.dataset`, :mod:`prelabel.evaluate.sequence_dataset`);
  its ``deliver`` is where a prediction goes: an upload and a label write, files, a PQ tally;
* a **sink** (:class:`Sink`, the :class:`~prelabel.run.recorder.Recorder`) knows where the
  outcomes go: resume state and leases (none for ``predict`` and ``evaluate``), the report,
  the progress bar and the policy's stops.

An engine is a scheduler: it decides which thread or machine runs each stage and how many
samples are in flight, nothing else (:func:`run_sequential` here,
:func:`~prelabel.run.overlapped.run_overlapped`, the Ray engine). ``record`` writes outcomes and
runs on the engine's calling thread; ``begin`` (take the lease, read the resume record) and the
I/O stages ``fetch`` and ``deliver`` may run in pools; ``infer`` runs where the model is.
:func:`prelabel.run.driver.drive` puts the three together for every front-end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Protocol

from prelabel.run.job import Job
from prelabel.run.outcome import SampleOutcome
from prelabel.run.steps import FrameCallback, UploadCallback
from prelabel.segments.client import SampleRef


class Lifecycle(Protocol):
    """What an engine schedules: one sample's stages, in this order."""

    def begin(self, sample: SampleRef) -> Job: ...

    def fetch(self, job: Job) -> Job: ...

    def infer(self, jobs: list[Job]) -> list[Job]: ...

    def deliver(self, job: Job) -> Job: ...

    def record(self, job: Job) -> None: ...


class Unit(Protocol):
    """One kind of sample's steps. Each step runs under the failure policy
    (:func:`~prelabel.run.policy.guarded`): it fails its job, never raises for the sample's own
    problem; a finished job passes through untouched."""

    def load_models(self) -> object:
        """Load the models now (before any sample's clock runs); a no-op once loaded."""
        ...

    def check(self, job: Job) -> Job: ...

    def fetch(self, job: Job) -> Job: ...

    def infer_batch(
        self, jobs: list[Job], record_frame: FrameCallback | None = None
    ) -> list[Job]: ...

    def deliver(self, job: Job, record_upload: UploadCallback) -> Job: ...


class Sink(Protocol):
    """Where a sample's facts and outcome go (:class:`~prelabel.run.recorder.Recorder`)."""

    def admit(self, sample: SampleRef) -> Job: ...

    def record_upload(self, job: Job) -> None: ...

    def record_frame(self, job: Job, index: int) -> None: ...

    def record(self, job: Job) -> SampleOutcome: ...


@dataclass
class Stages:
    """The one step order of every engine and front-end: a unit's steps, its facts and
    outcomes recorded by a sink."""

    unit: Unit
    sink: Sink

    def begin(self, sample: SampleRef) -> Job:
        return self.sink.admit(sample)

    def fetch(self, job: Job) -> Job:
        with job.timed():
            return self.unit.fetch(self.unit.check(job))

    def infer(self, jobs: list[Job]) -> list[Job]:
        if any(not j.finished and j.pending is None for j in jobs):
            self.unit.load_models()  # before any sample's clock runs
        with ExitStack() as stack:
            for job in jobs:
                stack.enter_context(job.timed())
            return self.unit.infer_batch(jobs, self.sink.record_frame)

    def deliver(self, job: Job) -> Job:
        with job.timed():
            return self.unit.deliver(job, self.sink.record_upload)

    def record(self, job: Job) -> None:
        self.sink.record(job)


#: A scheduler of :class:`Lifecycle` over samples until ``should_stop()`` is true.
Engine = Callable[[Lifecycle, Iterable[SampleRef], Callable[[], bool]], None]


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


def collect_finished(
    running: set[Future[Job]], record: Callable[[Job], object], *, block: bool
) -> None:
    """Record the jobs of ``running`` that have finished (waiting for the first one when
    ``block``), on the calling thread, and take them out of the set: the collect loop of the
    engines that deliver in a pool (overlapped's deliveries, Ray's label writes)."""
    if not running:
        return
    done, _ = wait(running, timeout=None if block else 0, return_when=FIRST_COMPLETED)
    for future in done:
        running.discard(future)
        record(future.result())
