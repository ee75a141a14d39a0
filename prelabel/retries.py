"""The one retry policy of every remote call: the Segments API, plain HTTP and bucket reads.

Exponential backoff with jitter, never shorter than a server's "retry after", at most
``remote.retry_attempts`` attempts, and a warning per retry naming what failed. Each caller
passes its own logger, so a retry is logged under the module that made the call (the API's
under :mod:`prelabel.segments.transport`, a bucket read's under :mod:`prelabel.storage.reader`)
while the rule itself is written once, here.
"""

from __future__ import annotations

import logging
import random

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from prelabel.config import RemoteSettings


class WaitHonouringRetryAfter:
    """Exponential backoff with jitter, but never shorter than the server asked for.

    ``initial * 2**(n-1)`` plus a jitter of up to ``initial``, capped at ``max``. Written out
    rather than tenacity's ``wait_exponential_jitter``, whose ``initial`` is deprecated in 9.x
    (``multiplier`` does not exist in 8.x) and whose jitter is a fixed 1 s whatever ``initial``.
    The hint is the failed attempt's exception's ``retry_after`` attribute, when it has one.
    """

    def __init__(self, settings: RemoteSettings) -> None:
        self._initial = settings.retry_initial_s
        self._max = settings.retry_max_s

    def __call__(self, state: RetryCallState) -> float:
        exponent = min(state.attempt_number - 1, 60)
        backoff = self._initial * 2**exponent + random.uniform(0, self._initial)
        wait = min(backoff, self._max)
        exc = state.outcome.exception() if state.outcome else None
        hint = getattr(exc, "retry_after", None)
        return max(wait, hint) if hint is not None else wait


def retry_policy(
    settings: RemoteSettings,
    what: str,
    *,
    retry_on: type[BaseException],
    log: logging.Logger,
) -> Retrying:
    """Tenacity policy retrying ``retry_on`` errors, with a warning on ``log`` per retry.

    ``retry_on`` is the transient error of the caller's layer (a
    :class:`~prelabel.errors.TransientRemoteError` for the API and plain HTTP, a
    :class:`~prelabel.errors.TransientStorageError` for buckets), or a narrower one for loops
    whose body makes calls that already retry on their own.
    """

    def log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "%s failed (attempt %d of %d): %s; retrying in %.1f s",
            what,
            state.attempt_number,
            settings.retry_attempts,
            exc,
            wait,
        )

    return Retrying(
        retry=retry_if_exception_type(retry_on),
        stop=stop_after_attempt(settings.retry_attempts),
        wait=WaitHonouringRetryAfter(settings),
        before_sleep=log_retry,
        reraise=True,
    )
