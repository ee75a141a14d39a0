"""The only module that calls the Segments.ai API.

The official SDK does the HTTP and parsing; this module makes it safe to run unattended
(shared/segments-api.md sections 0 and 4):

- every request has a timeout (the SDK sets none, so a silent server hangs it forever);
- transient failures (connection errors, timeouts, 5xx, 429 and the "throttled" message) are
  retried with tenacity, exponential backoff with jitter, honouring "available in N seconds";
  the SDK retries nothing on POST and turns a 429 into a plain ``NetworkError``;
- SDK exceptions are classified once, in :func:`classify`, into prelabel's error tree; it is the
  one place that string-matches SDK messages;
- a server that is down at start gives one clear line instead of the SDK's ``AttributeError``.

The API key is held by the SDK client only and never appears in a message or log line.
"""

from __future__ import annotations

import io
import logging
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
import segments.exceptions as sdk_errors
from requests.adapters import HTTPAdapter
from segments import SegmentsClient
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
)

from prelabel.config import RemoteSettings
from prelabel.errors import (
    AuthError,
    NotFoundRemoteError,
    RemoteError,
    TransientRemoteError,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Task types whose labels are segmentation bitmaps; anything else cannot take our labels.
BITMAP_TASK_TYPES = frozenset({"segmentation-bitmap", "segmentation-bitmap-highres"})

_AVAILABLE_IN = re.compile(r"available in (\d+(?:\.\d+)?) seconds?")
_POSSIBLE_FIXES = re.compile(r"\n\s*possible fixes:", re.IGNORECASE)
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class DatasetInfo:
    full_name: str
    task_type: str
    task_attributes: dict[str, Any]
    labelsets: tuple[str, ...]
    #: As the server reports it; for progress only (it may lag behind uploads).
    samples_count: int | None = None


@dataclass(frozen=True)
class SampleRef:
    """A sample as listed: enough to decide whether to label it and where its image is."""

    uuid: str
    name: str
    image_url: str | None
    #: Status in the listed labelset; ``None`` when the sample has no label there.
    label_status: str | None


@dataclass(frozen=True)
class LabelState:
    """What the server holds for a sample in one labelset right now."""

    status: str | None
    bitmap_url: str | None = None


class _TimeoutAdapter(HTTPAdapter):
    """Gives every request a timeout unless the caller set one.

    ``max_retries=0``: urllib3's immediate, unjittered retries would stack under ours.
    """

    def __init__(self, timeout: tuple[float, float]) -> None:
        super().__init__(max_retries=0)
        self._timeout = timeout

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().send(request, **kwargs)


def classify(exc: BaseException) -> RemoteError:
    """Map an SDK or requests exception to prelabel's error tree.

    The SDK lower-cases the response body into its message and maps by substring, losing the
    status code; we read the status from ``exc.cause.response`` where the SDK kept it.
    """
    if isinstance(exc, RemoteError):
        return exc
    message = _message(exc)
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


def _message(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    # The SDK appends a multi-line "Possible fixes" hint to not-found errors: noise in one line.
    text = _POSSIBLE_FIXES.split(str(text), maxsplit=1)[0]
    return " ".join(text.split())[:500]


def _status(exc: BaseException) -> int | None:
    for candidate in (exc, getattr(exc, "cause", None)):
        response = getattr(candidate, "response", None)
        if response is not None and getattr(response, "status_code", None) is not None:
            return int(response.status_code)
    return None


def _retry_after(message: str) -> float | None:
    match = _AVAILABLE_IN.search(message.lower())
    return float(match.group(1)) if match else None


class _WaitHonouringRetryAfter:
    """Exponential backoff with jitter, but never shorter than the server asked for.

    ``initial * 2**(n-1)`` plus a jitter of up to ``initial``, capped at ``max``. Written out
    rather than tenacity's ``wait_exponential_jitter``, whose ``initial`` is deprecated in 9.x
    (``multiplier`` does not exist in 8.x) and whose jitter is a fixed 1 s whatever ``initial``.
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


class SegmentsApi:
    """The calls the connector needs, each with timeouts, retries and classified errors."""

    def __init__(self, client: SegmentsClient, settings: RemoteSettings) -> None:
        self._client = client
        self._settings = settings
        self._downloads = requests.Session()
        adapter = _TimeoutAdapter((settings.connect_timeout_s, settings.read_timeout_s))
        for session in (client.api_session, client.s3_session, self._downloads):
            session.mount("http://", adapter)
            session.mount("https://", adapter)

    @classmethod
    def connect(cls, api_key: str, settings: RemoteSettings) -> SegmentsApi:
        """Check the server answers and the key is accepted, then build the SDK client.

        The probe runs first, with our timeout: the SDK's constructor makes an untimed request
        and crashes with ``AttributeError`` when the server is down. Probe and construction are
        retried together. (The constructor's own request still has no timeout: a server that
        answers the probe and then hangs on the next request can stall it.)
        """
        if not api_key:
            raise AuthError("no API key: set SEGMENTS_API_KEY or pass --api-key-file")
        probe = requests.Session()
        adapter = _TimeoutAdapter((settings.connect_timeout_s, settings.read_timeout_s))
        probe.mount("http://", adapter)
        probe.mount("https://", adapter)
        url = settings.api_url.rstrip("/") + "/api_status/"

        def ping() -> None:
            try:
                response = probe.get(url, headers={"Authorization": f"APIKey {api_key}"})
            except requests.RequestException as exc:
                raise TransientRemoteError(
                    f"cannot reach {settings.api_url}: {type(exc).__name__}"
                ) from None
            if response.status_code in (401, 403):
                raise AuthError(f"the API key was refused by {settings.api_url}")
            if response.status_code == 429 or response.status_code >= 500:
                raise TransientRemoteError(
                    f"{settings.api_url} answered {response.status_code}",
                    retry_after=_header_seconds(response.headers.get("Retry-After")),
                )
            if response.status_code >= 400:
                raise RemoteError(
                    f"{url} answered {response.status_code}: is {settings.api_url} the "
                    "Segments.ai API?"
                )

        def open_client() -> SegmentsClient:
            ping()
            try:
                return SegmentsClient(api_key=api_key, api_url=settings.api_url)
            except AttributeError:
                # The SDK's own crash when the server vanished mid-construction.
                raise TransientRemoteError(
                    f"cannot reach {settings.api_url}: connection lost"
                ) from None
            except (sdk_errors.SegmentsError, requests.RequestException) as exc:
                # The probe just accepted the key, so this is the server failing (the SDK
                # reports any error status here as "did you use the right API key?"): retry,
                # and the next probe tells a refused key apart.
                raise TransientRemoteError(
                    f"cannot connect to {settings.api_url}: {_message(exc)}"
                ) from None

        try:
            client = retrying(settings, "connect")(open_client)
        finally:
            probe.close()
        return cls(client, settings)

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one SDK call with classification and retries; ``what`` names it in logs."""
        return retrying(self._settings, what)(_classified(fn))

    def get_dataset(self, full_name: str) -> DatasetInfo:
        try:
            dataset = self.call(
                f"get dataset {full_name}", lambda: self._client.get_dataset(full_name)
            )
        except NotFoundRemoteError:
            raise NotFoundRemoteError(
                f"dataset {full_name} not found (check OWNER/NAME, and that the API key's user "
                "can see it)"
            ) from None
        attributes = dataset.task_attributes.model_dump() if dataset.task_attributes else {}
        return DatasetInfo(
            full_name=dataset.full_name,
            task_type=str(getattr(dataset.task_type, "value", dataset.task_type)),
            task_attributes=attributes,
            labelsets=tuple(ls.name for ls in dataset.labelsets or ()),
            samples_count=_int_or_none(getattr(dataset, "samples_count", None)),
        )

    def iter_samples(self, dataset: str, labelset: str) -> Iterator[SampleRef]:
        """Every sample, page by page, oldest first, with its status in ``labelset``.

        Sorted by creation time and not filtered by status on the server: labeling while
        listing would move samples between pages of a status filter and skip some, whereas
        new uploads only ever append to this order. Memory stays at one page.
        """
        page = 1
        per_page = self._settings.page_size
        while True:
            try:
                samples = self.call(
                    f"list samples page {page}",
                    lambda page=page: self._client.get_samples(
                        dataset, labelset=labelset, sort="created_at", per_page=per_page, page=page
                    ),
                )
            except NotFoundRemoteError:
                if page > 1:
                    return  # "Invalid page.": the previous page was the last, and full
                raise
            for sample in samples:
                yield _sample_ref(sample)
            if len(samples) < per_page:
                return
            page += 1

    def get_sample(self, sample_uuid: str, labelset: str) -> SampleRef | None:
        """The sample as it is now, with its status in ``labelset``; None once it is deleted.

        For events that name a sample by uuid only (webhooks): the payload is never trusted
        for anything but identifiers.
        """
        try:
            sample = self.call(
                "read sample", lambda: self._client.get_sample(sample_uuid, labelset=labelset)
            )
        except NotFoundRemoteError:
            return None
        return _sample_ref(sample)

    def ping(self) -> None:
        """One authenticated request, not retried (readiness probes); raises RemoteError."""
        _classified(self._client.get_user)()

    def label_state(self, sample_uuid: str, labelset: str) -> LabelState:
        """Read the label as it is now (``status=None`` when there is none)."""
        try:
            label = self.call(
                "read label", lambda: self._client.get_label(sample_uuid, labelset=labelset)
            )
        except NotFoundRemoteError:
            return LabelState(status=None)
        status = str(getattr(label.label_status, "value", label.label_status))
        bitmap = getattr(label.attributes, "segmentation_bitmap", None)
        return LabelState(status=status, bitmap_url=getattr(bitmap, "url", None))

    def label_bitmap(
        self, sample_uuid: str, labelset: str
    ) -> tuple[dict[int, int], str | None] | None:
        """The label's annotations (object id -> category id) and bitmap URL, read-only.

        ``None`` when the sample has no label in ``labelset``; the URL is ``None`` for a label
        without a segmentation bitmap (e.g. only a status was set). Used by evaluation, which
        compares a person's label with a prediction and must never write.
        """
        try:
            label = self.call(
                "read label", lambda: self._client.get_label(sample_uuid, labelset=labelset)
            )
        except NotFoundRemoteError:
            return None
        attributes = getattr(label, "attributes", None)
        annotations = {
            int(a.id): int(a.category_id) for a in getattr(attributes, "annotations", None) or ()
        }
        bitmap = getattr(attributes, "segmentation_bitmap", None)
        return annotations, getattr(bitmap, "url", None)

    def upload_png(self, png: bytes, filename: str) -> str:
        """Upload an asset and return its URL. A retry may leave an unused asset behind."""
        asset = self.call(
            "upload asset", lambda: self._client.upload_asset(io.BytesIO(png), filename)
        )
        return str(asset.url)

    def put_label_once(
        self, sample_uuid: str, labelset: str, attributes: dict[str, Any], score: float
    ) -> None:
        """Write a PRELABELED label, one attempt: the caller re-reads the label between
        attempts (see :func:`prelabel.upload.write_label`) so a lost answer never causes a
        second write."""
        _classified(
            lambda: self._client.add_label(
                sample_uuid, labelset, attributes, label_status="PRELABELED", score=score
            )
        )()

    def download(self, url: str) -> bytes:
        """Fetch an image anonymously, with a timeout, a status check and a size limit."""
        limit = self._settings.max_image_bytes

        def fetch() -> bytes:
            try:
                with self._downloads.get(url, stream=True) as response:
                    if response.status_code >= 400:
                        error = requests.HTTPError(f"HTTP {response.status_code} for image")
                        error.response = response
                        raise error
                    declared = int(response.headers.get("Content-Length") or 0)
                    if declared > limit:
                        raise RemoteError(f"image is {declared:,} bytes, over the {limit:,} limit")
                    chunks, size = [], 0
                    for chunk in response.iter_content(1 << 20):
                        size += len(chunk)
                        if size > limit:
                            raise RemoteError(f"image is over the {limit:,} byte limit")
                        chunks.append(chunk)
                    return b"".join(chunks)
            except requests.RequestException as exc:
                raise classify(exc) from None

        return retrying(self._settings, "download image")(fetch)

    def close(self) -> None:
        self._downloads.close()
        self._client.close()


def _sample_ref(sample: Any) -> SampleRef:
    image = getattr(getattr(sample, "attributes", None), "image", None)
    label = getattr(sample, "label", None)
    status = getattr(label, "label_status", None) if label is not None else None
    return SampleRef(
        uuid=str(sample.uuid),
        name=str(sample.name),
        image_url=getattr(image, "url", None),
        label_status=None if status is None else str(getattr(status, "value", status)),
    )


def _classified(fn: Callable[[], T]) -> Callable[[], T]:
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
    """Tenacity policy for transient failures, with a warning per retry naming ``what``.

    ``retry_on`` narrows what is retried (a subclass of :class:`TransientRemoteError`), for
    loops whose body makes calls that already retry on their own.
    """

    def log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        logger.warning(
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
        wait=_WaitHonouringRetryAfter(settings),
        before_sleep=log_retry,
        reraise=True,
    )


def _int_or_none(value: object) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _header_seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
