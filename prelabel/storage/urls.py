"""Where an image URL points: an S3 object, a GCS object, or anything else (plain HTTP).

Parsing is pure (no client library is imported here), so a URL is classified, and its bucket
named in a message, whether or not the extra for it is installed. Recognised forms:

- S3: ``s3://BUCKET/KEY``; virtual-hosted ``https://BUCKET.s3.REGION.amazonaws.com/KEY`` (also
  ``s3-REGION``, ``s3-accelerate``, ``dualstack`` and ``.amazonaws.com.cn``); path-style
  ``https://s3.REGION.amazonaws.com/BUCKET/KEY``.
- GCS: ``gs://BUCKET/OBJECT``; ``https://storage.googleapis.com/BUCKET/OBJECT`` (and
  ``storage.cloud.google.com``); ``https://BUCKET.storage.googleapis.com/OBJECT``.

Everything else is fetched over plain HTTP, and so are bucket URLs with a query string (a
presigned URL already carries its credentials, and other parameters have no client equivalent)
and Segments' own public asset bucket, as the SDK's ``load_image_from_url`` does.

``s3://`` and ``gs://`` keys are taken verbatim, as the AWS and gcloud tools do; keys in https
URLs are percent-decoded.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Literal

from prelabel.errors import StorageError

BucketScheme = Literal["s3", "gs"]
_SCHEMES: tuple[BucketScheme, ...] = ("s3", "gs")

#: Segments' own asset buckets are public; the SDK reads them over HTTP even with a client.
PUBLIC_BUCKETS = frozenset({"segmentsai-prod"})

_REGION = r"[a-z]{2}(?:-gov|-iso[a-z]*)?-[a-z]+-\d+"
_S3_HOST = rf"s3(?:[.-](?:accelerate|dualstack|external-1|{_REGION}))*\.amazonaws\.com(?:\.cn)?"
_S3_VIRTUAL = re.compile(rf"(?P<bucket>[a-z0-9][a-z0-9.\-]*?)\.{_S3_HOST}")
_S3_PATH = re.compile(_S3_HOST)
_GCS_VIRTUAL = re.compile(r"(?P<bucket>[a-z0-9][a-z0-9._\-]*)\.storage\.googleapis\.com")
_GCS_PATH_HOSTS = frozenset({"storage.googleapis.com", "storage.cloud.google.com"})
_QUERY = re.compile(r"\?[^\s'\"<>?]*=[^\s'\"<>]*")


@dataclass(frozen=True, kw_only=True)
class HttpObject:
    """A URL read with a plain GET (the Segments client's download, with its limits)."""

    url: str

    def __str__(self) -> str:
        return display_url(self.url)


@dataclass(frozen=True, kw_only=True)
class BucketObject:
    """An object in an S3 or GCS bucket, read with that storage's client."""

    scheme: BucketScheme
    bucket: str
    key: str
    #: The URL as given when it is an https URL (readable anonymously without the extra).
    http_url: str | None = None

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}"


StorageObject = HttpObject | BucketObject


def parse_url(url: str) -> StorageObject:
    """Classify ``url``; raises :class:`StorageError` for an ``s3://``/``gs://`` URL without a
    bucket or key."""
    for scheme in _SCHEMES:
        prefix = f"{scheme}://"
        if url[: len(prefix)].lower() == prefix:
            bucket, _, key = url[len(prefix) :].partition("/")
            if not bucket or not key:
                raise StorageError(f"{url!r} is not a {prefix}BUCKET/KEY URL")
            return BucketObject(scheme=scheme, bucket=bucket, key=key)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.query or not parts.hostname:
        return HttpObject(url=url)
    found = _bucket_and_key(parts.hostname, urllib.parse.unquote(parts.path))
    if found is None or found[1] in PUBLIC_BUCKETS or not found[2]:
        return HttpObject(url=url)
    scheme, bucket, key = found
    return BucketObject(scheme=scheme, bucket=bucket, key=key, http_url=url)


def _bucket_and_key(host: str, path: str) -> tuple[BucketScheme, str, str] | None:
    path = path.lstrip("/")
    if match := _S3_VIRTUAL.fullmatch(host):
        return "s3", match["bucket"], path
    if _S3_PATH.fullmatch(host):
        bucket, _, key = path.partition("/")
        return ("s3", bucket, key) if bucket else None
    if host in _GCS_PATH_HOSTS:
        bucket, _, key = path.partition("/")
        return ("gs", bucket, key) if bucket else None
    if match := _GCS_VIRTUAL.fullmatch(host):
        return "gs", match["bucket"], path
    return None


def display_url(url: str) -> str:
    """``url`` fit for a message or a log line: no user info, query string or fragment.

    A query may be a signature (presigned S3/GCS URLs, Azure SAS tokens): a credential.
    """
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact_queries(text: str) -> str:
    """Replace every query string in free text (an exception message that quotes a URL)."""
    return _QUERY.sub("?...", text)
