"""A long-running worker: pre-label what arrived since the last cycle, every interval.

Each cycle is exactly ``prelabel run`` (same selection, safety rules and resume state), so a
sample uploaded between cycles is picked up by the next one. Stopping (SIGTERM, SIGINT) is
cooperative: the worker starts no new sample, lets uploads in flight finish, and the loop
returns, so nothing is half-written and the state file stays consistent. When the API fails, the
next attempt comes sooner than the interval but backs off exponentially, with jitter so that
several workers do not retry in step.
"""

from __future__ import annotations

import logging
import os
import random
import re
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import FrameType

from prelabel.config import Settings
from prelabel.errors import ConfigError, PrelabelError
from prelabel.progress import Progress
from prelabel.run.dataset import run_dataset
from prelabel.run.job import RunOptions
from prelabel.run.policy import ends_loop
from prelabel.run.report import RunSummary
from prelabel.run.steps import Predictor
from prelabel.state import StateStore

logger = logging.getLogger(__name__)

_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr)?\s*$", re.IGNORECASE)
_UNIT_S = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hr": 3600.0}


def parse_interval(text: str) -> float:
    """``"10m"`` -> 600.0; accepts s, m, h suffixes or plain seconds."""
    match = _INTERVAL.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"interval {text!r} is not a positive duration like 30s, 10m or 1h")
    unit = match.group(2).lower() if match.group(2) else None
    return float(match.group(1)) * _UNIT_S[unit]


@dataclass(frozen=True)
class SyncPolicy:
    interval_s: float
    once: bool = False
    #: First wait after a failed cycle; doubles per failure, up to ``max(interval, 5 min)``.
    backoff_initial_s: float = 5.0
    jitter: float = 0.1

    def delay_after_failure(self, failures: int, rng: random.Random) -> float:
        cap = max(self.interval_s, 300.0)
        # The exponent is bounded: 2 ** 1024 no longer converts to a float (OverflowError
        # after about three days of a failing API at the 5 min cap).
        base = min(cap, self.backoff_initial_s * 2 ** min(failures - 1, 64))
        return base * (1 + rng.uniform(0, self.jitter * 2))

    def delay_after_success(self, rng: random.Random) -> float:
        return self.interval_s * (1 + rng.uniform(-self.jitter, self.jitter))


#: The exit code of a command stopped by SIGINT or SIGTERM before it finished (``run``): the
#: shell's code for SIGINT, whichever of the two it was. Documented in the README.
EXIT_INTERRUPTED = 130


class StopSignal:
    """Set by SIGTERM or SIGINT; the worker polls it between samples.

    ``hard_second``: a second signal ends the process at once (``prelabel run``: a second
    Ctrl-C), with :data:`EXIT_INTERRUPTED`. That is as safe as a ``kill -9``: a label write is
    one request, local files are written atomically and the next run resumes. Without it
    (``sync``, ``serve``) a second signal does not cut the drain short.
    """

    def __init__(self, *, hard_second: bool = False) -> None:
        self.event = threading.Event()
        self.hard_second = hard_second
        #: The first signal received, by name ("SIGINT").
        self.received: str | None = None

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    @contextmanager
    def installed(self) -> Iterator[StopSignal]:
        """:meth:`install` for a block; the previous handlers come back after it (a process
        that goes on, such as tests invoking commands in process, keeps its own)."""
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals reach the main thread only: nothing to install
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        self.install()
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.event.is_set():
            if self.hard_second:
                os.write(2, f"{name} again: stopping now; rerun the same command\n".encode())
                os._exit(EXIT_INTERRUPTED)
            return
        self.received = name
        logger.warning("%s received: finishing the samples in flight, then stopping", name)
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()


def sync_loop(
    cycle: Callable[[Callable[[], bool]], RunSummary],
    policy: SyncPolicy,
    stop: StopSignal,
    *,
    rng: random.Random | None = None,
    on_summary: Callable[[RunSummary], None] = lambda _summary: None,
) -> RunSummary | None:
    """Run ``cycle(should_stop)`` until stopped (or once); returns the last cycle's summary.

    The errors the policy's table says end a loop (a refused key, a bad config, a missing
    dataset, models that cannot load: :func:`~prelabel.run.policy.ends_loop`) are raised;
    other errors of prelabel's (the server down) are logged and retried with backoff. With
    ``policy.once`` a failing cycle raises, so cron sees a non-zero exit.
    """
    rng = rng or random.Random()
    failures = 0
    last: RunSummary | None = None
    while not stop.is_set():
        try:
            last = cycle(stop.is_set)
        except PrelabelError as exc:
            if ends_loop(exc) or policy.once:
                raise  # a refused key, a bad config, a missing dataset: retrying cannot help
            failures += 1
            delay = policy.delay_after_failure(failures, rng)
            logger.warning(
                "sync cycle failed (%d in a row): %s; next try in %.0f s", failures, exc, delay
            )
        else:
            failures = 0
            on_summary(last)
            if policy.once:
                break
            delay = policy.delay_after_success(rng)
            logger.info("next cycle in %.0f s", delay)
        stop.event.wait(delay)
    return last


class CycleOptions:
    """The options of each cycle over one dataset: ``overwrite_prelabels`` and ``retry_failed``
    hold for the first completed cycle only.

    After one cycle completes, every PRELABELED label it finds is one it just wrote, and redoing
    them each cycle would rewrite the dataset every interval. ``prelabel sync`` and
    ``prelabel serve`` (per served dataset) both keep their cycles' options here.
    """

    def __init__(self, options: RunOptions) -> None:
        self._first = options
        self._completed = False

    @property
    def current(self) -> RunOptions:
        if self._completed:
            return replace(self._first, overwrite_prelabels=False, retry_failed=False)
        return self._first

    def completed(self) -> None:
        """Call when a cycle has returned; later cycles label new samples only."""
        self._completed = True


def sync_dataset(
    api_key: str,
    settings: Settings,
    options: RunOptions,
    *,
    state: StateStore,
    load_pipeline: Callable[[], Predictor],
    policy: SyncPolicy,
    stop: StopSignal,
    progress: Callable[[], Progress],
    on_summary: Callable[[RunSummary], None] = lambda _summary: None,
) -> RunSummary | None:
    """``prelabel sync``: :func:`sync_loop` over cycles of :func:`run_dataset`.

    ``progress`` makes each cycle's bar. ``options.overwrite_prelabels`` holds for the first
    cycle only (:class:`CycleOptions`).
    """
    cycles = CycleOptions(options)

    def cycle(should_stop: Callable[[], bool]) -> RunSummary:
        summary = run_dataset(
            api_key,
            settings,
            cycles.current,
            state=state,
            load_pipeline=load_pipeline,
            progress=progress(),
            should_stop=should_stop,
        )
        cycles.completed()
        return summary

    return sync_loop(cycle, policy, stop, on_summary=on_summary)
