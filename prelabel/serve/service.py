"""The long-running part of ``prelabel serve``: queue worker, safety-net cycles, readiness.

Threads, all started by :meth:`Service.start`:

- **webhooks**: loads the models, then takes tasks from the queue and hands the lifecycle a
  stream of sample uuids of one dataset (as long as tasks for it keep coming), so bursts run
  through the overlapped engine like a ``run`` does;
- **cycles**: ``prelabel sync``'s loop (:func:`prelabel.run.sync.sync_loop`) over every served
  dataset, first at start, then every interval: a lost or refused webhook only delays a sample,
  and tasks still queued when the process stopped are labeled by the next start's first cycle;
- **probe**: checks the API every few seconds for ``/readyz`` (a daemon: never waited for).

Webhook work and cycles may meet on one sample; the state file's leases keep them apart, as
they keep two ``sync`` workers apart. Stopping (:meth:`Service.begin_drain`, on SIGTERM) refuses
new deliveries with 503, lets the samples in progress finish and then calls the ``on_drained``
callbacks (the HTTP server exits). An error that will not fix itself (a refused key, a missing
dataset, models that cannot load: :func:`prelabel.run.policy.ends_loop`, asked by both workers) ends
the service the same way, with :attr:`Service.fatal` set to the first such error.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prelabel.errors import PrelabelError
from prelabel.run.outcome import SampleOutcome
from prelabel.run.report import RunSummary
from prelabel.run.sync import StopSignal, SyncPolicy, sync_loop
from prelabel.serve.dedup import DeliveryLog
from prelabel.serve.intake import Intake
from prelabel.serve.lifecycle import Lifecycle, ShouldStop
from prelabel.serve.metrics import Metrics
from prelabel.serve.webhooks import SampleTask, SignatureVerifier
from prelabel.serve.work_queue import WorkQueue

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeConfig:
    datasets: tuple[str, ...]
    labelset: str = "ground-truth"
    interval_s: float = 600.0
    #: Samples waiting at most; a delivery beyond gets 503 and is retried by the sender.
    queue_size: int = 10_000
    #: Sent with 503 answers.
    retry_after_s: int = 30
    probe_interval_s: float = 10.0


class ServeObserver:
    """The lifecycle's per-outcome and per-inference hooks: metrics, and one log line each."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def on_outcome(self, dataset: str, outcome: SampleOutcome) -> None:
        self.metrics.on_outcome(dataset, outcome)
        level = logging.WARNING if outcome.result == "failed" else logging.INFO
        logger.log(
            level,
            "%s %s: %s%s",
            dataset,
            outcome.sample_name or outcome.sample_uuid,
            outcome.result,
            f" ({outcome.reason})" if outcome.reason else "",
            extra={
                "dataset": dataset,
                "sample": outcome.sample_uuid,
                "outcome": outcome.result,
                "reason": outcome.reason,
            },
        )

    def on_inference(self, seconds: float) -> None:
        self.metrics.on_inference(seconds)


class Readiness:
    """Whether to take traffic: models loaded, API answered recently, not stopping."""

    def __init__(self, max_probe_age_s: float) -> None:
        self._max_age = max_probe_age_s
        self.models_loaded = False
        self.draining = False
        self._api_ok_at: float | None = None
        self._api_error: str | None = "not checked yet"

    def api_ok(self) -> None:
        self._api_ok_at, self._api_error = time.monotonic(), None

    def api_failed(self, reason: str) -> None:
        self._api_error = reason

    def report(self) -> tuple[bool, dict[str, Any]]:
        fresh = self._api_ok_at is not None and time.monotonic() - self._api_ok_at < self._max_age
        api = self._api_error is None and fresh
        details: dict[str, Any] = {
            "models_loaded": self.models_loaded,
            "api_reachable": api,
            "draining": self.draining,
        }
        if not api:
            details["api_error"] = self._api_error or "no recent answer"
        return self.models_loaded and api and not self.draining, details


class Service:
    """Ties the intake, the queue and the lifecycle together; see the module docstring."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        config: ServeConfig,
        *,
        verifier: SignatureVerifier,
        deliveries: DeliveryLog,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.queue = WorkQueue(config.queue_size)
        metrics.watch_queue(self.queue.__len__)
        self.readiness = Readiness(max_probe_age_s=3 * config.probe_interval_s)
        self.intake = Intake(
            verifier,
            deliveries,
            self.queue,
            metrics,
            datasets=config.datasets,
            labelset=config.labelset,
            accepting=lambda: not self.readiness.draining,
            retry_after_s=config.retry_after_s,
        )
        self.fatal: BaseException | None = None
        self._lifecycle = lifecycle
        self._policy = SyncPolicy(interval_s=config.interval_s)
        self._stop = StopSignal()  # never installed: the HTTP server owns the signals
        # Reentrant: begin_drain also runs in a signal handler, which may interrupt this thread.
        self._lock = threading.RLock()
        self._workers: list[threading.Thread] = []
        self._drained = threading.Event()
        self._on_drained: list[Callable[[], None]] = []

    def start(self) -> None:
        for name, target in (("webhooks", self._work_webhooks), ("cycles", self._work_cycles)):
            thread = threading.Thread(target=self._guarded(target), name=f"prelabel-{name}")
            self._workers.append(thread)
            thread.start()
        threading.Thread(target=self._probe, name="prelabel-probe", daemon=True).start()

    def on_drained(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once everything in progress has finished after a stop."""
        self._on_drained.append(callback)

    def begin_drain(self) -> None:
        """Stop taking deliveries and starting samples; returns at once (idempotent)."""
        with self._lock:
            if self.readiness.draining:
                return
            self.readiness.draining = True
        logger.warning(
            "stopping: new deliveries get 503; finishing the samples in progress (%d queued "
            "samples are left for the first cycle of the next start)",
            len(self.queue),
        )
        self._stop.event.set()
        threading.Thread(target=self._finish, name="prelabel-drain", daemon=True).start()

    @property
    def idle(self) -> bool:
        """No webhook task waiting or being labeled."""
        return self.queue.unfinished == 0

    def wait_drained(self, timeout: float | None = None) -> bool:
        return self._drained.wait(timeout)

    def _finish(self) -> None:
        for thread in self._workers:
            thread.join()
        self._drained.set()
        for callback in self._on_drained:
            callback()

    def _guarded(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception as exc:  # a worker thread's last resort: stop the whole service
                with self._lock:
                    first = self.fatal is None
                    if first:
                        self.fatal = exc  # whichever thread met an error first names it
                if first:
                    logger.error("stopping the service: %s", exc, exc_info=not _expected(exc))
                self.begin_drain()

        return run

    def _work_webhooks(self) -> None:
        self._lifecycle.load_models()
        self.readiness.models_loaded = True
        rng, failures = random.Random(), 0
        while not self._stop.is_set():
            task = self.queue.take(timeout=0.2)
            if task is None:
                continue
            batch = _Batch(self.queue, task, self._stop.is_set)
            try:
                self._lifecycle.label_samples(task.dataset, batch, self._stop.is_set)
            except PrelabelError as exc:
                if self._lifecycle.ends_loop(exc):
                    raise  # as in the cycles: a refused key, a bad config, no models
                failures += 1
                delay = self._policy.delay_after_failure(failures, rng)
                logger.warning(
                    "webhook samples failed (%d in a row): %s; samples not started are left for "
                    "the next cycle; next try in %.0f s",
                    failures,
                    exc,
                    delay,
                )
                self._stop.event.wait(delay)
            else:
                failures = 0
            finally:
                self.queue.task_done(batch.taken)

    def _work_cycles(self) -> None:
        def cycle(should_stop: ShouldStop) -> RunSummary:
            total = RunSummary()
            for dataset in self.config.datasets:
                if should_stop():
                    break
                summary = self._lifecycle.run_cycle(dataset, should_stop)
                total.counts.update(summary.counts)
                total.reasons.update(summary.reasons)
            return total

        sync_loop(cycle, self._policy, self._stop, on_summary=self._cycle_done)

    def _cycle_done(self, summary: RunSummary) -> None:
        if self._stop.is_set():
            return  # cut short: not a complete cycle
        self.metrics.on_cycle_success()
        counts = ", ".join(f"{n} {result}" for result, n in sorted(summary.counts.items()))
        logger.info("sync cycle done: %s", counts or "nothing to do")

    def _probe(self) -> None:
        while not self._stop.is_set():
            try:
                self._lifecycle.check_api()
            except PrelabelError as exc:
                self.readiness.api_failed(str(exc))
            else:
                self.readiness.api_ok()
            self._stop.event.wait(self.config.probe_interval_s)


class _Batch:
    """The uuids handed to the lifecycle: the first task's, then the queue's next ones while
    they are for the same dataset; ``taken`` counts what was handed out."""

    def __init__(self, queue: WorkQueue, first: SampleTask, stopping: ShouldStop) -> None:
        self._queue = queue
        self._first = first
        self._stopping = stopping
        self.taken = 1

    def __iter__(self) -> Iterator[str]:
        task: SampleTask | None = self._first
        while task is not None:
            logger.debug("sample %s of %s (%s)", task.sample_uuid, task.dataset, task.trigger)
            yield task.sample_uuid
            task = None if self._stopping() else self._queue.take_if(self._first.dataset)
            if task is not None:
                self.taken += 1


def _expected(exc: BaseException) -> bool:
    """Errors with a clear message of their own; anything else keeps its traceback."""
    return isinstance(exc, PrelabelError)
