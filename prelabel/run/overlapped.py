"""Overlap I/O with inference: thread pools with bounded queues around one inference stage.

Per sample the lifecycle's stages are begin -> fetch -> infer -> deliver -> record (see
:mod:`prelabel.run.lifecycle`). Here ``begin + fetch`` (lease and resume record, label re-read,
download, decode) run in a fetch pool up to ``prefetch`` samples ahead, ``infer`` on the
calling thread (one model, one device) on ``batch_size`` samples per model call, ``deliver``
(encode, upload, re-read, write) in a deliver pool with at most ``deliver_queue`` samples in
flight, and ``record`` (outcomes into state, report and progress) on the calling thread.

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
from concurrent.futures import Future, ThreadPoolExecutor, wait

from prelabel.config import WorkerSettings
from prelabel.run.job import Job
from prelabel.run.lifecycle import Lifecycle, collect_finished
from prelabel.segments.client import SampleRef

logger = logging.getLogger(__name__)


def run_overlapped(
    lifecycle: Lifecycle,
    samples: Iterable[SampleRef],
    settings: WorkerSettings,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Run every sample through the lifecycle; ``record`` is called on this thread.

    Once ``should_stop()`` is true, samples fetched but not yet predicted are abandoned (nothing
    of theirs was written; the next run takes them) and those being delivered finish.
    """
    fetch_pool = ThreadPoolExecutor(settings.fetch_workers, thread_name_prefix="prelabel-fetch")
    deliver_pool = ThreadPoolExecutor(
        settings.deliver_workers, thread_name_prefix="prelabel-deliver"
    )
    fetching: deque[Future[Job]] = deque()
    delivering: set[Future[Job]] = set()
    pending: Iterator[SampleRef] = iter(samples)

    def begin_and_fetch(sample: SampleRef) -> Job:
        return lifecycle.fetch(lifecycle.begin(sample))

    def refill() -> None:
        while len(fetching) < settings.prefetch:
            sample = next(pending, None)
            if sample is None:
                return
            fetching.append(fetch_pool.submit(begin_and_fetch, sample))

    def collect(block: bool) -> None:
        collect_finished(delivering, lifecycle.record, block=block)

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
            for job in lifecycle.infer(batch):
                while len(delivering) >= settings.deliver_queue:
                    collect(block=True)
                delivering.add(deliver_pool.submit(lifecycle.deliver, job))
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
                    lifecycle.record(future.result())
        raise
    finally:
        fetch_pool.shutdown(wait=True, cancel_futures=True)
        deliver_pool.shutdown(wait=True)
