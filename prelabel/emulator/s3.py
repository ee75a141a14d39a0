"""The fake S3 bucket behind ``upload_asset``: presigned POST fields, multipart parsing, keys.

The SDK uploads assets in two steps (spec section 2.5): ``POST /assets/`` returns a URL and eight
presigned form fields, then the file is POSTed as ``multipart/form-data`` to that URL without any
API key. Real S3 answers 204 with an empty body and serves the object publicly afterwards. This
module holds the parts of that flow that are not HTTP plumbing.

Multipart bodies are parsed by hand: ``cgi`` is deprecated, and ``email`` can rewrite line endings
inside binary parts, which corrupts PNGs (their signature contains ``\\r\\n``).
"""

from __future__ import annotations

import mimetypes
import re
from dataclasses import dataclass
from email.message import Message
from pathlib import PurePosixPath

# The eight keys the SDK's ``AWSFields`` TypedDict requires, in the order real S3 presigns them.
PRESIGNED_FIELD_KEYS = (
    "acl",
    "Content-Type",
    "key",
    "x-amz-algorithm",
    "x-amz-credential",
    "x-amz-date",
    "policy",
    "x-amz-signature",
)

UPLOAD_PATH = "/s3-upload/"
DOWNLOAD_PREFIX = "/s3/"


@dataclass(frozen=True)
class FormPart:
    """One part of a ``multipart/form-data`` body."""

    name: str
    filename: str | None
    data: bytes


class MultipartError(ValueError):
    """The body is not the multipart form the SDK sends."""


def content_type_for(filename: str) -> tuple[str, str]:
    """(extension, MIME type) for an uploaded file name; unknown types are octet streams."""
    extension = PurePosixPath(filename).suffix.lower()
    guessed, _ = mimetypes.guess_type(f"x{extension}")
    return extension, guessed or "application/octet-stream"


def presigned_fields(key: str, content_type: str, stamp: str) -> dict[str, str]:
    """The form fields of a presigned POST; only ``key`` is checked on upload."""
    return {
        "acl": "public-read",
        "Content-Type": content_type,
        "key": key,
        "x-amz-algorithm": "AWS4-HMAC-SHA256",
        "x-amz-credential": "EMULATOR/20240101/eu-west-2/s3/aws4_request",
        "x-amz-date": stamp,
        "policy": "ZW11bGF0b3ItcG9saWN5",
        "x-amz-signature": "0" * 64,
    }


def s3_error(code: str, message: str) -> bytes:
    """S3's XML error body. The SDK cannot parse it (it is not JSON), which is the point: a
    failing upload must surface as the same ``NetworkError`` it would against real S3."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    ).encode()


def _boundary(content_type: str) -> bytes:
    message = Message()
    message["Content-Type"] = content_type
    if message.get_content_type() != "multipart/form-data":
        raise MultipartError(f"expected multipart/form-data, got {content_type!r}")
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise MultipartError("multipart body without a boundary")
    return boundary.encode("latin-1")


_HEADER_LINE = re.compile(rb"^([^:\r\n]+):[ \t]*(.*)$")


def parse_multipart(content_type: str, body: bytes) -> list[FormPart]:
    """Split a ``multipart/form-data`` body into its parts, keeping binary data byte-exact."""
    delimiter = b"--" + _boundary(content_type)
    chunks = body.split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise MultipartError("multipart body is truncated or has no closing boundary")
    parts = []
    for chunk in chunks[1:-1]:
        if not chunk.startswith(b"\r\n") or not chunk.endswith(b"\r\n"):
            raise MultipartError("malformed multipart part")
        head, separator, data = chunk[2:-2].partition(b"\r\n\r\n")
        if not separator:
            raise MultipartError("multipart part without a header/body separator")
        disposition = Message()
        for line in head.split(b"\r\n"):
            match = _HEADER_LINE.match(line)
            if match is None:
                raise MultipartError(f"malformed multipart header {line!r}")
            disposition[match.group(1).decode("latin-1")] = match.group(2).decode("utf-8")
        name = disposition.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise MultipartError("multipart part without a name")
        filename = disposition.get_param("filename", header="content-disposition")
        parts.append(FormPart(name, filename if isinstance(filename, str) else None, data))
    return parts
