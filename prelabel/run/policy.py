"""The one failure policy: what fails a sample, what is transient, what stops a run or a loop.

Every engine (sequential, overlapped, Ray) and front-end (review push, evaluate, predict) runs
its steps through :func:`guarded` and counts outcomes with :class:`RunStop`; ``sync`` and both
``serve`` workers ask :func:`ends_loop`. So a rule stated here holds everywhere:

- :data:`ERROR_TABLE` says, per error, whether it ends a run (raised out of a sample's steps
  instead of failing that sample: a refused API key, models that cannot load or return NaN,
  the first samples all failing alike in the model) and whether it ends a ``sync`` or
  ``serve`` loop (those, plus a bad config and a missing dataset: retrying cannot fix them).
  Any other error escaping a loop's cycle or webhook batch (the server down) is retried with
  backoff.
- Anything else raised while working on one sample fails that sample only, with the reason in
  the report: prelabel's own errors by their message, an unexpected exception (a bug, an odd
  input to the model code) by its type and message, with the traceback in the log.
- A :class:`~prelabel.errors.TransientRemoteError` (after its own retries), a transient
  storage error and a :class:`~prelabel.errors.SampleError` marked ``transient`` (the image
  host answered 5xx) are *transient* failures: they never count toward parking a sample. After
  :data:`MAX_CONSECUTIVE_TRANSIENT` of them in a row the server is down, not the samples bad:
  the run stops with a :class:`~prelabel.errors.RemoteError` instead of marking the whole
  dataset failed.
- When the first :data:`MAX_SAME_MODEL_ERRORS` samples of a run all fail with the same error
  raised by the model (not by their own data: a download, a decode, a size), every sample
  would: the run stops with a :class:`SameModelError`, the error named once.
- A sample failing for reasons of its own ``worker.max_attempts`` times is parked
  (:func:`parks`); the state store only counts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from prelabel.errors import (
    AuthError,
    ConfigError,
    ImageError,
    ModelLoadError,
    NotFoundRemoteError,
    PrelabelError,
    RemoteError,
    SampleError,
    StorageError,
    TransientRemoteError,
    TransientStorageError,
)
from prelabel.run.outcome import SampleOutcome
from prelabel.segments.client import SampleRef

logger = logging.getLogger(__name__)


class SameModelError(PrelabelError):
    """The first samples of a run all failed with one error raised by the model: every sample
    would, so the run stops (exit code 2) instead of paying the models for each of them."""


@dataclass(frozen=True)
class Ends:
    """What an error ends when it escapes: the run (never one sample's failure), a loop."""

    run: bool
    loop: bool


#: The one table of errors that end a run or a ``sync``/``serve`` loop, most specific first.
#: An error not listed fails its sample (in a run) or is retried with backoff (in a loop).
ERROR_TABLE: tuple[tuple[type[Exception], Ends], ...] = (
    (AuthError, Ends(run=True, loop=True)),  # a refused API key
    (ModelLoadError, Ends(run=True, loop=True)),  # models that cannot load, NaN outputs
    (SameModelError, Ends(run=True, loop=True)),  # the model fails every sample alike
    (ConfigError, Ends(run=False, loop=True)),  # a bad config or categories
    (NotFoundRemoteError, Ends(run=False, loop=True)),  # a missing dataset or labelset
)

#: Errors that would fail every sample alike: raised, never recorded per sample.
RUN_WIDE_ERRORS: tuple[type[Exception], ...] = tuple(e for e, ends in ERROR_TABLE if ends.run)
#: Errors after which a ``sync`` or ``serve`` loop stops instead of retrying.
LOOP_ENDING_ERRORS: tuple[type[Exception], ...] = tuple(e for e, ends in ERROR_TABLE if ends.loop)


def ends_run(exc: BaseException) -> bool:
    """Whether ``exc``, raised while working on a sample, ends the run (see the table)."""
    return isinstance(exc, RUN_WIDE_ERRORS)


def ends_loop(exc: BaseException) -> bool:
    """Whether ``exc``, escaping a sync cycle or a webhook batch, ends the loop (see the
    table); any other :class:`~prelabel.errors.PrelabelError` is retried with backoff."""
    return isinstance(exc, LOOP_ENDING_ERRORS)


#: Samples in a row (in the order they finish) failing on server trouble that stop a run.
MAX_CONSECUTIVE_TRANSIENT = 3
#: The first samples of a run that, all failing with one model error, stop it.
MAX_SAME_MODEL_ERRORS = 3

#: Errors of a sample's own data: never a model's error, whichever step met them.
_DATA_ERRORS: tuple[type[Exception], ...] = (ImageError, StorageError, RemoteError, SampleError)


def parks(attempts: int, max_attempts: int) -> bool:
    """Whether a sample that has failed ``attempts`` times for reasons of its own (server
    trouble not counted) is parked: left alone until a run is asked to retry failed samples."""
    return attempts >= max_attempts


@dataclass(frozen=True)
class Failure:
    """Why one sample failed, as the report says it.

    ``model`` marks an error raised by the model (the infer step), not by the sample's data:
    the errors :class:`RunStop` compares across a run's first samples.
    """

    reason: str
    transient: bool
    model: bool = False


def failure_of(exc: Exception, sample: SampleRef, *, in_model: bool = False) -> Failure:
    """How an exception raised while working on ``sample`` counts; run-wide ones are raised.

    ``in_model``: raised by the model step. Such a failure is logged with its traceback at
    debug level only: when every sample meets it, :class:`RunStop` names it once.
    """
    if ends_run(exc):
        raise exc
    model = in_model and not isinstance(exc, _DATA_ERRORS)
    if isinstance(exc, TransientRemoteError | TransientStorageError) or (
        isinstance(exc, SampleError) and exc.transient
    ):
        failure = Failure(str(exc), transient=True)
    elif isinstance(exc, PrelabelError):
        failure = Failure(str(exc), transient=False, model=model)
    else:
        failure = Failure(f"{type(exc).__name__}: {exc}", transient=False, model=model)
        if not model:
            # A bug or an odd input: keep the traceback in the log.
            logger.error("sample %s (%s) raised", sample.name, sample.uuid, exc_info=exc)
    if model:
        logger.debug("sample %s (%s) raised in the model", sample.name, sample.uuid, exc_info=exc)
    else:
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


def guarded(job: J, step: Callable[[J], None], *, in_model: bool = False) -> J:
    """Run ``step`` on ``job`` unless it has already finished; a failure finishes it.

    Never raises for a problem of this sample alone (see the module docstring), so the
    steps after it simply pass a failed job through. ``in_model``: ``step`` is the one that
    calls the model (see :func:`failure_of`).
    """
    if job.finished:
        return job
    try:
        step(job)
    except Exception as exc:
        job.fail(failure_of(exc, job.sample, in_model=in_model))
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


class SameModelErrorStop:
    """Stops a run whose first :data:`MAX_SAME_MODEL_ERRORS` samples all failed with one model
    error; from the first outcome that breaks the pattern on, it only logs model errors.

    While the pattern holds the errors are held back, so a run it stops names the error once
    (in the :class:`SameModelError`), without a traceback (``-v`` shows them).
    """

    def __init__(self, limit: int = MAX_SAME_MODEL_ERRORS) -> None:
        self.limit = limit
        self._held: list[SampleOutcome] = []
        self._watching = True
        self._stopped = False

    def observe(self, outcome: SampleOutcome, *, model_error: bool) -> None:
        """Call once per outcome, in the order they finish.

        Raises:
            SameModelError: the first ``limit`` outcomes failed with one model error.
        """
        if self._stopped:
            return  # the samples in flight when the run stopped
        if not self._watching:
            if model_error:
                _log_model_failure(outcome)
            return
        if model_error and all(held.reason == outcome.reason for held in self._held):
            self._held.append(outcome)
            if len(self._held) >= self.limit:
                count = len(self._held)
                self._held.clear()  # named once, in the error
                self._stopped = True
                raise SameModelError(
                    f"stopping: the first {count} samples all failed in the model "
                    f"with the same error, so every sample would: {outcome.reason}"
                )
            return
        self._watching = False
        self.flush()
        if model_error:
            _log_model_failure(outcome)

    def flush(self) -> None:
        """Log the model errors held back (a run that ended before the pattern was settled)."""
        for held in self._held:
            _log_model_failure(held)
        self._held.clear()


def _log_model_failure(outcome: SampleOutcome) -> None:
    logger.error(
        "sample %s (%s) failed in the model: %s",
        outcome.sample_name,
        outcome.sample_uuid,
        outcome.reason,
    )


class RunStop:
    """Every stop the policy makes on a run's outcomes: server trouble in a row
    (:class:`TransientStop`), the first samples failing alike in the model
    (:class:`SameModelErrorStop`)."""

    def __init__(self, transient: TransientStop | None = None) -> None:
        self.transient = transient or TransientStop()
        self.model = SameModelErrorStop()

    def observe(self, outcome: SampleOutcome, *, model_error: bool = False) -> None:
        """Call once per outcome, in the order they finish; raises when the run must stop."""
        self.transient.observe(outcome)
        self.model.observe(outcome, model_error=model_error)

    def close(self) -> None:
        """At the end of the run: log what was held back."""
        self.model.flush()
