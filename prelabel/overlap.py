"""Overlap I/O with inference: thread pools with bounded queues around one inference stage.

Per sample the worker's steps are begin -> fetch -> infer -> deliver (see
:class:`prelabel.worker.DatasetWorker`). Here ``begin + fetch`` (state lookup, download,
decode) run in a fetch pool up to ``prefetch`` samples ahead, ``infer`` runs on the calling
thread (one model, one device) on ``batch_size`` samples per model call, and ``deliver``
(encode, upload, re-read, write) runs in a deliver pool with at most ``deliver_queue`` samples
in flight.

Why it cannot deadlock: no thread ever waits on a queue another stage fills. The calling thread
only waits on futures, and every future finishes on its own (the steps never raise for a
sample's own problem, only for run-wide ones). Memory is bounded by ``prefetch + batch_size``
decoded images plus ``deliver_queue + batch_size`` predictions, whatever the dataset size. A
run-wide error (refused key, models that cannot load, server down) cancels what has not
started, lets deliveries in flight finish (nothing is left half-written), and is raised.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Protocol

from prelabel.config import WorkerSettings
from prelabel.report import SampleOutcome
from prelabel.segments_client import SampleRef

if TYPE_CHECKING:
    from prelabel.worker import Job

logger = logging.getLogger(__name__)


class Steps(Protocol):
    def begin(self, sample: SampleRef) -> Job: ...

    def fetch(self, job: Job) -> Job: ...

    def infer(self, job: Job) -> Job: ...

    def infer_batch(self, jobs: list[Job]) -> list[Job]: ...

    def deliver(self, job: Job) -> SampleOutcome: ...


def run_overlapped(
    steps: Steps,
    samples: Iterable[SampleRef],
    settings: WorkerSettings,
    record: Callable[[SampleOutcome], None],
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Run every sample through the steps; ``record`` is called on this thread per outcome.

    Once ``should_stop()`` is true, samples fetched but not yet predicted are abandoned (nothing
    of theirs was written; the next run takes them) and those being delivered finish.
    """
    fetch_pool = ThreadPoolExecutor(settings.fetch_workers, thread_name_prefix="prelabel-fetch")
    deliver_pool = ThreadPoolExecutor(
        settings.deliver_workers, thread_name_prefix="prelabel-deliver"
    )
    fetching: deque[Future[Job]] = deque()
    delivering: set[Future[SampleOutcome]] = set()
    pending: Iterator[SampleRef] = iter(samples)

    def refill() -> None:
        while len(fetching) < settings.prefetch:
            sample = next(pending, None)
            if sample is None:
                return
            fetching.append(fetch_pool.submit(lambda s=sample: steps.fetch(steps.begin(s))))

    def collect(block: bool) -> None:
        if not delivering:
            return
        done, _ = wait(delivering, timeout=None if block else 0, return_when=FIRST_COMPLETED)
        for future in done:
            delivering.discard(future)
            record(future.result())

    try:
        refill()
        while fetching:
            if should_stop():
                logger.info("stopping: %d prefetched samples left for the next run", len(fetching))
                for future in fetching:
                    future.cancel()
                fetching.clear()
                break
            # Up to batch_size samples in order; with batch_size 1 this is one sample.
            batch = [fetching.popleft().result()]
            while fetching and len(batch) < settings.batch_size:
                batch.append(fetching.popleft().result())
            refill()
            for job in steps.infer_batch(batch) if len(batch) > 1 else [steps.infer(batch[0])]:
                while len(delivering) >= settings.deliver_queue:
                    collect(block=True)
                delivering.add(deliver_pool.submit(steps.deliver, job))
            collect(block=False)
        while delivering:
            collect(block=True)
    except BaseException:
        for future in fetching:
            future.cancel()
        # Let uploads and label writes already running finish, so none is cut in half, and
        # report the ones that completed.
        wait(delivering)
        for future in delivering:
            if not future.cancelled() and future.exception() is None:
                with contextlib.suppress(Exception):  # the first error is the one to raise
                    record(future.result())
        raise
    finally:
        fetch_pool.shutdown(wait=True, cancel_futures=True)
        deliver_pool.shutdown(wait=True)
