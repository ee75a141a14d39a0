"""The one failure policy: what fails a sample, what is transient, what stops a run.

Every engine (sequential, overlapped, Ray) and front-end (review push, evaluate, predict) runs
its steps through :func:`guarded` and counts outcomes with :class:`TransientStop`, so a rule
stated here holds everywhere:

- A refused API key, models that cannot load or that return NaN (:data:`RUN_WIDE_ERRORS`)
  would fail every sample alike: they are raised and end the run (exit code 2 in the CLI).
- Anything else raised while working on one sample fails that sample only, with the reason in
  the report: prelabel's own errors by their message, an unexpected exception (a bug, an odd
  input to the model code) by its type and message, with the traceback in the log.
- A :class:`~prelabel.errors.TransientRemoteError` (after its own retries), a transient
  storage error and a :class:`~prelabel.errors.SampleError` marked ``transient`` (the image
  host answered 5xx) are *transient* failures: they never count toward parking a sample. After
  :data:`MAX_CONSECUTIVE_TRANSIENT` of them in a row the server is down, not the samples bad:
  the run stops with a :class:`~prelabel.errors.RemoteError` instead of marking the whole
  dataset failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from prelabel.errors import (
    AuthError,
    ModelLoadError,
    PrelabelError,
    RemoteError,
    SampleError,
    TransientRemoteError,
    TransientStorageError,
)
from prelabel.run.outcome import SampleOutcome
from prelabel.segments.client import SampleRef

logger = logging.getLogger(__name__)

#: Errors that would fail every sample alike: raised, never recorded per sample.
RUN_WIDE_ERRORS: tuple[type[Exception], ...] = (AuthError, ModelLoadError)

#: Samples in a row (in the order they finish) failing on server trouble that stop a run.
MAX_CONSECUTIVE_TRANSIENT = 3


@dataclass(frozen=True)
class Failure:
    """Why one sample failed, as the report says it."""

    reason: str
    transient: bool


def failure_of(exc: Exception, sample: SampleRef) -> Failure:
    """How an exception raised while working on ``sample`` counts; run-wide ones are raised."""
    if isinstance(exc, RUN_WIDE_ERRORS):
        raise exc
    if isinstance(exc, TransientRemoteError | TransientStorageError) or (
        isinstance(exc, SampleError) and exc.transient
    ):
        failure = Failure(str(exc), transient=True)
    elif isinstance(exc, PrelabelError):
        failure = Failure(str(exc), transient=False)
    else:
        # A bug or an odd input in the model code: keep the traceback in the log.
        logger.error("sample %s (%s) raised", sample.name, sample.uuid, exc_info=exc)
        failure = Failure(f"{type(exc).__name__}: {exc}", transient=False)
    logger.error("sample %s (%s) failed: %s", sample.name, sample.uuid, failure.reason)
    return failure


class Failable(Protocol):
    """A job of any front-end: it names its sample, knows whether it has finished, can fail."""

    @property
    def sample(self) -> SampleRef: ...

    @property
    def finished(self) -> bool: ...

    def fail(self, failure: Failure) -> None: ...


J = TypeVar("J", bound=Failable)


def guarded(job: J, step: Callable[[J], None]) -> J:
    """Run ``step`` on ``job`` unless it has already finished; a failure finishes it.

    Never raises for a problem of this sample alone (see the module docstring), so the
    steps after it simply pass a failed job through.
    """
    if job.finished:
        return job
    try:
        step(job)
    except Exception as exc:
        job.fail(failure_of(exc, job.sample))
    return job


class TransientStop:
    """Counts samples in a row that failed on server trouble and stops the run at the limit."""

    def __init__(self, limit: int = MAX_CONSECUTIVE_TRANSIENT) -> None:
        self.limit = limit
        self._in_a_row = 0

    def observe(self, outcome: SampleOutcome) -> None:
        """Call once per outcome, in the order they finish.

        Raises:
            RemoteError: the limit was reached (the outcome itself is already recorded).
        """
        self._in_a_row = self._in_a_row + 1 if outcome.transient else 0
        if self._in_a_row >= self.limit:
            raise RemoteError(
                f"stopping: {self._in_a_row} samples in a row failed to reach the server "
                f"after retries (last: {outcome.reason}); rerun to resume"
            )
