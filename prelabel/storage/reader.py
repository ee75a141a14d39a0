"""Read an image's bytes from wherever its URL points, with the client that location needs.

- ``s3://`` and S3 https URLs: boto3 (:mod:`prelabel.storage.s3`);
- ``gs://`` and GCS https URLs: google-cloud-storage (:mod:`prelabel.storage.gcs`);
- anything else: the ``http_get`` callable given at construction (the Segments client's
  download, which has the timeouts, retries and size limit of plain HTTP).

A bucket URL whose client library is not installed fails with a message naming the extra to
install, except an https one, which is tried over plain HTTP first (public buckets need no
extra, as before). When the read is refused (401/403, no credentials, no client library) and the
caller can get the URL Segments signs for this image, that URL is tried once over plain HTTP.

Errors are :class:`~prelabel.errors.StorageError` subclasses naming the object and the cause.
Transient ones are retried for bucket reads with the API's retry policy
(:mod:`prelabel.retries`; the HTTP callable retries its own), under the ``remote`` settings.
No message or log line contains a query string (signatures are credentials) or a credential.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from prelabel.config import RemoteSettings
from prelabel.errors import (
    AccessDeniedError,
    AuthError,
    MissingExtraError,
    NotFoundRemoteError,
    RemoteError,
    StorageAccessError,
    StorageError,
    StorageNotFoundError,
    TransientRemoteError,
    TransientStorageError,
)
from prelabel.retries import retry_policy
from prelabel.storage.base import BucketReader
from prelabel.storage.gcs import GcsReader
from prelabel.storage.s3 import S3Reader
from prelabel.storage.urls import BucketObject, BucketScheme, HttpObject, parse_url, redact_queries

logger = logging.getLogger(__name__)

#: Fetch a plain URL: bytes, or a RemoteError (AuthError on 401/403, NotFoundRemoteError on
#: 404, TransientRemoteError after its own retries).
HttpGet = Callable[[str], bytes]
#: The URL Segments signs for this image, or ``None``; asked only after a refusal.
SignedUrl = Callable[[], str | None]


class ImageReader:
    """Reads image URLs for one run; thread-safe, one client per storage kind, built lazily."""

    def __init__(self, http_get: HttpGet, settings: RemoteSettings) -> None:
        self._http_get = http_get
        self._settings = settings
        self._lock = threading.Lock()
        self._buckets: dict[BucketScheme, BucketReader] = {}

    def read(self, url: str, *, signed_url: SignedUrl | None = None) -> bytes:
        """The bytes at ``url``; a refused read is retried once with ``signed_url()``."""
        target = parse_url(url)
        try:
            return self._read(target)
        except StorageAccessError as exc:
            refused = exc
        signed = signed_url() if signed_url is not None else None
        if not signed or signed == url:
            raise refused
        logger.info("%s: %s; trying the URL Segments signed for it", target, refused)
        try:
            return self._http(signed)
        except StorageError as exc:
            raise type(refused)(f"{refused}; the URL Segments signed failed too: {exc}") from None

    def _read(self, target: HttpObject | BucketObject) -> bytes:
        if isinstance(target, HttpObject):
            return self._http(target.url)
        reader = self._bucket(target.scheme)
        try:
            retry = retry_policy(
                self._settings, f"reading {target}", retry_on=TransientStorageError, log=logger
            )
            return retry(reader.read, target)
        except MissingExtraError as missing:
            if target.http_url is None:
                raise
            logger.debug("%s; reading %s over plain HTTP", missing, target)
            try:
                return self._http(target.http_url)
            except AccessDeniedError as exc:
                raise MissingExtraError(f"{exc}; {missing}") from None

    def _http(self, url: str) -> bytes:
        where = HttpObject(url=url)
        try:
            return self._http_get(url)
        except AuthError as exc:
            raise AccessDeniedError(f"access denied to {where} ({_text(exc)})") from None
        except NotFoundRemoteError as exc:
            raise StorageNotFoundError(f"not found: {where} ({_text(exc)})") from None
        except TransientRemoteError as exc:
            raise TransientStorageError(f"{where}: {_text(exc)}") from None
        except RemoteError as exc:
            raise StorageError(f"{where}: {_text(exc)}") from None

    def _bucket(self, scheme: BucketScheme) -> BucketReader:
        with self._lock:
            if scheme not in self._buckets:
                kind = S3Reader if scheme == "s3" else GcsReader
                self._buckets[scheme] = kind(self._settings)
            return self._buckets[scheme]

    def close(self) -> None:
        with self._lock:
            for reader in self._buckets.values():
                reader.close()
            self._buckets.clear()


def _text(exc: BaseException) -> str:
    return redact_queries(str(exc))
