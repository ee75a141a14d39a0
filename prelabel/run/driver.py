"""The one driver: samples, a unit, a sink and an engine; every front-end runs through it.

``run``, ``sync`` and ``serve`` (:class:`~prelabel.run.dataset.DatasetWorker`), ``predict``
(:mod:`prelabel.local`, :mod:`prelabel.local_sequences`) and ``evaluate``
(:mod:`prelabel.evaluate.dataset`, :mod:`prelabel.evaluate.sequence_dataset`) differ only in
their unit (the kind of sample and its steps) and their sink (a recorder with or without
state); the step order is :class:`~prelabel.run.lifecycle.Stages`', the scheduling the
engine's. So a stop (SIGINT, SIGTERM: ``should_stop``) ends each of them the same way: no new
sample starts, the samples in flight finish and are recorded, the summary says how many are
left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prelabel.config import WorkerSettings
from prelabel.run.lifecycle import Engine, Lifecycle, Stages, Unit, run_sequential
from prelabel.run.overlapped import run_overlapped
from prelabel.run.recorder import Recorder
from prelabel.run.report import RunSummary
from prelabel.segments.client import SampleRef


def drive(
    samples: Iterable[SampleRef],
    unit: Unit,
    sink: Recorder,
    engine: Engine = run_sequential,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    expected: int | None = None,
    description: str = "pre-label",
) -> RunSummary:
    """Every sample through ``unit``'s steps, scheduled by ``engine``, recorded by ``sink``.

    ``expected`` sizes the progress bar and, on a stop, gives the samples left (``None``: not
    known). The sink is closed (leases freed, report finished) whatever happens; errors that
    end a run (:mod:`prelabel.run.policy`) are raised after that.
    """
    sink.progress.start(expected, description)
    try:
        engine(Stages(unit, sink), samples, should_stop)
        if should_stop():
            # Before the close: the report's last keys say the run was interrupted.
            mark_interrupted(sink, expected)
    finally:
        sink.close()
    return sink.summary


def mark_interrupted(recorder: Recorder, expected: int | None) -> None:
    """A stopped run: what is left is what was expected less what was recorded or passed
    (samples fetched ahead and abandoned count as left: nothing of theirs was written)."""
    summary = recorder.summary
    summary.interrupted = True
    if expected is not None:
        done = sum(summary.counts.values()) + recorder.passed_count
        summary.remaining = max(expected - done, 0)


def local_engine(worker: WorkerSettings) -> Engine:
    """The engine ``worker.engine`` names, on this machine."""
    if worker.engine == "sequential":
        return run_sequential

    def overlapped(
        lifecycle: Lifecycle, samples: Iterable[SampleRef], should_stop: Callable[[], bool]
    ) -> None:
        run_overlapped(lifecycle, samples, worker, should_stop)

    return overlapped
