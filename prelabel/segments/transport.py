"""How every request to Segments is made safe: timeouts, error classification, retries.

The SDK sets no timeout, retries nothing on POST, lower-cases response bodies into its messages
and maps errors by substring (shared/segments-api.md sections 0 and 4). Here every session gets a
timeout, SDK and requests exceptions are classified once, in :func:`classify`, into prelabel's
error tree (the one place that string-matches SDK messages), and :func:`retrying` retries the
transient ones with the one retry policy (:mod:`prelabel.retries`): exponential backoff and
jitter, honouring "available in N seconds".
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable, Mapping
from typing import TypeVar
from urllib.parse import urlsplit

import requests
import segments.exceptions as sdk_errors
from requests.adapters import HTTPAdapter
from tenacity import Retrying

from prelabel.config import RemoteSettings
from prelabel.errors import (
    AuthError,
    NotFoundRemoteError,
    RemoteError,
    TransientRemoteError,
)
from prelabel.retries import retry_policy
from prelabel.storage.urls import redact_queries

logger = logging.getLogger(__name__)

T = TypeVar("T")

_AVAILABLE_IN = re.compile(r"available in (\d+(?:\.\d+)?) seconds?")
_POSSIBLE_FIXES = re.compile(r"\n\s*possible fixes:", re.IGNORECASE)
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class TimeoutAdapter(HTTPAdapter):
    """Gives every request a timeout unless the caller set one.

    ``max_retries=0``: urllib3's immediate, unjittered retries would stack under ours.
    """

    def __init__(self, timeout: tuple[float, float]) -> None:
        super().__init__(max_retries=0)
        self._timeout = timeout

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        return super().send(
            request,
            stream=stream,
            timeout=self._timeout if timeout is None else timeout,
            verify=verify,
            cert=cert,
            proxies=proxies,
        )


def classify(exc: BaseException) -> RemoteError:
    """Map an SDK or requests exception to prelabel's error tree.

    The SDK lower-cases the response body into its message and maps by substring, losing the
    status code; we read the status from ``exc.cause.response`` where the SDK kept it.
    """
    if isinstance(exc, RemoteError):
        return exc
    message = message_of(exc)
    status = _status(exc)
    if isinstance(exc, sdk_errors.APILimitError) or "throttled" in message.lower():
        return TransientRemoteError(f"rate limited: {message}", retry_after=_retry_after(message))
    if isinstance(
        exc, sdk_errors.AuthenticationError | sdk_errors.AuthorizationError
    ) or status in {
        401,
        403,
    }:
        return AuthError(f"not authorised: {message}")
    if isinstance(exc, sdk_errors.NotFoundError) or status == 404:
        return NotFoundRemoteError(message)
    if isinstance(exc, sdk_errors.TimeoutError | requests.Timeout | requests.ConnectionError):
        return TransientRemoteError(f"connection problem: {message}")
    if status in _TRANSIENT_STATUS:
        return TransientRemoteError(f"server error {status}: {message}")
    if isinstance(exc, sdk_errors.NetworkError) and status is None:
        # No response at all: a reset, a refused connection or a malformed reply.
        return TransientRemoteError(f"network error: {message}")
    return RemoteError(message)


def message_of(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    # The SDK appends a multi-line "Possible fixes" hint to not-found errors: noise in one line.
    text = _POSSIBLE_FIXES.split(str(text), maxsplit=1)[0]
    # A requests error quotes the URL, and a signed URL's query is a credential.
    return redact_queries(" ".join(text.split()))[:500]


def _status(exc: BaseException) -> int | None:
    for candidate in (exc, getattr(exc, "cause", None)):
        response = getattr(candidate, "response", None)
        if response is not None and getattr(response, "status_code", None) is not None:
            return int(response.status_code)
    return None


def _retry_after(message: str) -> float | None:
    match = _AVAILABLE_IN.search(message.lower())
    return float(match.group(1)) if match else None


def classified(fn: Callable[[], T]) -> Callable[[], T]:
    def run() -> T:
        try:
            return fn()
        except (sdk_errors.SegmentsError, requests.RequestException) as exc:
            raise classify(exc) from None

    return run


def retrying(
    settings: RemoteSettings,
    what: str,
    *,
    retry_on: type[BaseException] = TransientRemoteError,
) -> Retrying:
    """The one retry policy (:func:`prelabel.retries.retry_policy`) for API calls, logged here.

    ``retry_on`` narrows what is retried (a subclass of :class:`TransientRemoteError`), for
    loops whose body makes calls that already retry on their own.
    """
    return retry_policy(settings, what, retry_on=retry_on, log=logger)


def header_seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def check_listening(api_url: str, timeout_s: float) -> None:
    """Raise :class:`RemoteError` at once when nothing listens at ``api_url`` (refused).

    At start-up a refused connection is a wrong ``--api-url`` or a server that was not started,
    not server trouble: retrying it with backoff only delays the message by half a minute.
    Anything else (no DNS answer, a timeout, a proxy in the way) is left to the retrying calls.
    """
    parts = urlsplit(api_url)
    if not parts.hostname or requests.utils.get_environ_proxies(api_url):
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
    except ConnectionRefusedError:
        raise RemoteError(
            f"nothing listens at {api_url}; is the emulator running (or --api-url right)?"
        ) from None
    except OSError:
        return
