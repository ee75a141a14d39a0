"""The only module that calls the Segments.ai API.

The official SDK does the HTTP and parsing; this module makes it safe to run unattended
(shared/segments-api.md sections 0 and 4), with the timeouts, error classification and retries
of :mod:`prelabel.segments.transport`:

- every request has a timeout (the SDK sets none, so a silent server hangs it forever);
- transient failures (connection errors, timeouts, 5xx, 429 and the "throttled" message) are
  retried with tenacity, exponential backoff with jitter, honouring "available in N seconds";
- a server that is down at start gives one clear line instead of the SDK's ``AttributeError``.

The API key is held by the SDK client only and never appears in a message or log line.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
import segments.exceptions as sdk_errors
from segments import SegmentsClient
from segments.typing import LabelStatus

from prelabel.config import RemoteSettings
from prelabel.errors import (
    AuthError,
    NotFoundRemoteError,
    RemoteError,
    TransientRemoteError,
)
from prelabel.formats.sequence_label import Timestamp, label_bitmap_urls
from prelabel.formats.vector_label import typed_label_attributes, vector_label_key
from prelabel.segments.statuses import PRELABELED, SEQUENCE_TASK_TYPES
from prelabel.segments.transport import (
    TimeoutAdapter,
    classified,
    classify,
    header_seconds,
    message_of,
    retrying,
)
from prelabel.storage import ImageReader

T = TypeVar("T")


@dataclass(frozen=True)
class DatasetInfo:
    full_name: str
    task_type: str
    task_attributes: dict[str, Any]
    labelsets: tuple[str, ...]
    #: As the server reports it; for progress only (it may lag behind uploads).
    samples_count: int | None = None

    @property
    def is_sequence(self) -> bool:
        """Samples are sequences of frames, and labels hold one segmentation per frame."""
        return self.task_type in SEQUENCE_TASK_TYPES


@dataclass(frozen=True)
class SequenceFrame:
    """One frame of a sequence sample, as the sample lists it (shared/segments-api.md 10.2)."""

    image_url: str | None
    name: str | None = None
    timestamp: Timestamp = None


@dataclass(frozen=True)
class SampleRef:
    """A sample as listed: enough to decide whether to label it and where its image is."""

    uuid: str
    name: str
    image_url: str | None
    #: Status in the listed labelset; ``None`` when the sample has no label there.
    label_status: str | None
    #: The sample was announced (by a webhook) and is gone: nothing to label.
    deleted: bool = False
    #: A sequence sample's frames, in order; ``()`` for an image sample.
    frames: tuple[SequenceFrame, ...] = ()

    @classmethod
    def gone(cls, uuid: str) -> SampleRef:
        """A sample named by ``uuid`` that no longer exists on the server."""
        return cls(uuid, "", None, None, deleted=True)


@dataclass(frozen=True)
class LabelState:
    """What the server holds for a sample in one labelset right now."""

    status: str | None
    bitmap_url: str | None = None
    #: Every bitmap URL the label points at: one for an image label, one per sequence frame
    #: (``bitmap_url`` is None for a sequence); a box/polygon label is told by its content.
    bitmap_urls: tuple[str | None, ...] = ()
    vector_key: tuple[Any, ...] | None = None


class SegmentsApi:
    """The calls the connector needs, each with timeouts, retries and classified errors."""

    def __init__(self, client: SegmentsClient, settings: RemoteSettings) -> None:
        self._client = client
        self._settings = settings
        self._downloads = requests.Session()
        adapter = TimeoutAdapter((settings.connect_timeout_s, settings.read_timeout_s))
        for session in (client.api_session, client.s3_session, self._downloads):
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        #: Reads image URLs (plain HTTP through :meth:`download`, S3, GCS); see prelabel.storage.
        self.storage = ImageReader(self.download, settings)

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
        adapter = TimeoutAdapter((settings.connect_timeout_s, settings.read_timeout_s))
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
                    retry_after=header_seconds(response.headers.get("Retry-After")),
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
                    f"cannot connect to {settings.api_url}: {message_of(exc)}"
                ) from None

        try:
            client = retrying(settings, "connect")(open_client)
        finally:
            probe.close()
        return cls(client, settings)

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one SDK call with classification and retries; ``what`` names it in logs."""
        return retrying(self._settings, what)(classified(fn))

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

            def get_page(page: int = page) -> list[Any]:
                return self._client.get_samples(
                    dataset, labelset=labelset, sort="created_at", per_page=per_page, page=page
                )

            try:
                samples = self.call(f"list samples page {page}", get_page)
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
        classified(self._client.get_user)()

    def label_state(self, sample_uuid: str, labelset: str) -> LabelState:
        """Read the label as it is now (``status=None`` when there is none)."""
        try:
            label = self.call(
                "read label", lambda: self._client.get_label(sample_uuid, labelset=labelset)
            )
        except NotFoundRemoteError:
            return LabelState(status=None)
        bitmap = getattr(label.attributes, "segmentation_bitmap", None)
        dumped = label.attributes.model_dump() if label.attributes is not None else None
        return LabelState(
            status=str(getattr(label.label_status, "value", label.label_status)),
            bitmap_url=getattr(bitmap, "url", None),
            bitmap_urls=label_bitmap_urls(dumped),
            vector_key=vector_label_key(dumped),
        )

    def label_bitmap(
        self, sample_uuid: str, labelset: str
    ) -> tuple[dict[int, int], str | None] | None:
        """The label's annotations (object id -> category id) and bitmap URL, read-only.

        ``None`` when the sample has no label in ``labelset``; the URL is ``None`` for a label
        without a segmentation bitmap (e.g. only a status was set). Used by evaluation, which
        compares a person's label with a prediction and must never write.
        """
        frames = self.label_frames(sample_uuid, labelset)
        return None if frames is None else (frames[0] if frames else ({}, None))

    def label_frames(
        self, sample_uuid: str, labelset: str
    ) -> list[tuple[dict[int, int], str | None]] | None:
        """As :meth:`label_bitmap`, per frame of a sequence label (one entry for an image label)."""
        try:
            label = self.call(
                "read label", lambda: self._client.get_label(sample_uuid, labelset=labelset)
            )
        except NotFoundRemoteError:
            return None
        attributes = getattr(label, "attributes", None)
        frames = getattr(attributes, "frames", None)
        return [
            (
                {int(a.id): int(a.category_id) for a in getattr(f, "annotations", None) or ()},
                getattr(getattr(f, "segmentation_bitmap", None), "url", None),
            )
            for f in (frames if frames is not None else [attributes])
        ]

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
        attempts (see :func:`prelabel.segments.upload.write_label`) so a lost answer never causes a
        second write. Sequence and vector attributes are sent as the SDK's typed model, which
        skips the SDK's guess among its label models (shared/segments-api.md 10.3, 12.4)."""
        typed: Any = typed_label_attributes(attributes)
        classified(
            lambda: self._client.add_label(
                sample_uuid, labelset, typed, label_status=LabelStatus(PRELABELED), score=score
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

    def signed_url(self, sample_uuid: str, url: str) -> str | None:
        """The URL Segments signs for ``url``, the sample's image or one of its frames.

        ``None`` when Segments signs none (it can only sign buckets it was given access to) or
        the sample is gone. Never logged: a signed URL is a credential until it expires.
        """
        try:
            sample = self.call(
                "get signed URL",
                lambda: self._client.get_sample(sample_uuid, include_signed_url=True),
            )
        except NotFoundRemoteError:
            return None
        attributes = getattr(sample, "attributes", None)
        frames = getattr(attributes, "frames", None) or ()
        for image in (
            getattr(attributes, "image", None),
            *(getattr(f, "image", None) for f in frames),
        ):
            if image is not None and getattr(image, "url", None) == url:
                return getattr(image, "signed_url", None) or None
        return None

    def close(self) -> None:
        self.storage.close()
        self._downloads.close()
        self._client.close()


def _sample_ref(sample: Any) -> SampleRef:
    attributes = getattr(sample, "attributes", None)
    image = getattr(attributes, "image", None)
    label = getattr(sample, "label", None)
    status = getattr(label, "label_status", None) if label is not None else None
    frames = tuple(
        SequenceFrame(
            image_url=getattr(getattr(frame, "image", None), "url", None),
            name=getattr(frame, "name", None),
            timestamp=getattr(frame, "timestamp", None),
        )
        for frame in getattr(attributes, "frames", None) or ()
    )
    return SampleRef(
        uuid=str(sample.uuid),
        name=str(sample.name),
        image_url=getattr(image, "url", None),
        label_status=None if status is None else str(getattr(status, "value", status)),
        frames=frames,
    )


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
