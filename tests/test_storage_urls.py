"""URL classification for the storage layer, and its place below the Segments connector."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from prelabel.errors import StorageError
from prelabel.storage.urls import (
    BucketObject,
    HttpObject,
    display_url,
    parse_url,
    redact_queries,
)

S3_HTTPS = "https://my-bucket.s3.eu-west-1.amazonaws.com/run1/0001.jpg"


def s3(bucket: str, key: str, http_url: str | None = None) -> BucketObject:
    return BucketObject(scheme="s3", bucket=bucket, key=key, http_url=http_url)


def gs(bucket: str, key: str, http_url: str | None = None) -> BucketObject:
    return BucketObject(scheme="gs", bucket=bucket, key=key, http_url=http_url)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://my-bucket/run1/0001.jpg", s3("my-bucket", "run1/0001.jpg")),
        ("S3://b/a b%20c.png", s3("b", "a b%20c.png")),  # s3:// keys are verbatim
        (S3_HTTPS, s3("my-bucket", "run1/0001.jpg", S3_HTTPS)),
        (
            "https://my.dotted.bucket.s3.amazonaws.com/k.png",
            s3("my.dotted.bucket", "k.png", "https://my.dotted.bucket.s3.amazonaws.com/k.png"),
        ),
        (
            "https://b.s3-us-west-2.amazonaws.com/a%20b.png",
            s3("b", "a b.png", "https://b.s3-us-west-2.amazonaws.com/a%20b.png"),
        ),
        (
            "https://b.s3.dualstack.ap-southeast-2.amazonaws.com/k",
            s3("b", "k", "https://b.s3.dualstack.ap-southeast-2.amazonaws.com/k"),
        ),
        (
            "https://b.s3-accelerate.amazonaws.com/k",
            s3("b", "k", "https://b.s3-accelerate.amazonaws.com/k"),
        ),
        (
            "https://b.s3.cn-north-1.amazonaws.com.cn/k",
            s3("b", "k", "https://b.s3.cn-north-1.amazonaws.com.cn/k"),
        ),
        (
            "https://s3.eu-west-1.amazonaws.com/my-bucket/run1/0002.jpg",
            s3(
                "my-bucket",
                "run1/0002.jpg",
                "https://s3.eu-west-1.amazonaws.com/my-bucket/run1/0002.jpg",
            ),
        ),
        (
            "https://s3.amazonaws.com/b/deep/k.png",
            s3("b", "deep/k.png", "https://s3.amazonaws.com/b/deep/k.png"),
        ),
        ("gs://g-bucket/frames/0001.png", gs("g-bucket", "frames/0001.png")),
        (
            "https://storage.googleapis.com/g-bucket/frames/a%20b.png",
            gs(
                "g-bucket",
                "frames/a b.png",
                "https://storage.googleapis.com/g-bucket/frames/a%20b.png",
            ),
        ),
        (
            "https://storage.cloud.google.com/g/k.png",
            gs("g", "k.png", "https://storage.cloud.google.com/g/k.png"),
        ),
        (
            "https://g-bucket.storage.googleapis.com/k.png",
            gs("g-bucket", "k.png", "https://g-bucket.storage.googleapis.com/k.png"),
        ),
        # Plain HTTP: other hosts, Segments' public bucket, already signed URLs, no key.
        ("https://example.com/a.png", HttpObject(url="https://example.com/a.png")),
        ("http://127.0.0.1:9000/b/k.png", HttpObject(url="http://127.0.0.1:9000/b/k.png")),
        (
            "https://segmentsai-prod.s3.eu-west-2.amazonaws.com/assets/u/x.png",
            HttpObject(url="https://segmentsai-prod.s3.eu-west-2.amazonaws.com/assets/u/x.png"),
        ),
        (
            f"{S3_HTTPS}?X-Amz-Signature=abc&X-Amz-Credential=AKIA",
            HttpObject(url=f"{S3_HTTPS}?X-Amz-Signature=abc&X-Amz-Credential=AKIA"),
        ),
        ("https://s3.amazonaws.com/", HttpObject(url="https://s3.amazonaws.com/")),
        ("https://b.s3.amazonaws.com/", HttpObject(url="https://b.s3.amazonaws.com/")),
        # A bucket whose name contains "s3-" is not mistaken for the host part.
        (
            "https://logs.s3-archive.s3.amazonaws.com/k",
            s3("logs.s3-archive", "k", "https://logs.s3-archive.s3.amazonaws.com/k"),
        ),
        ("https://notamazonaws.com/b/k", HttpObject(url="https://notamazonaws.com/b/k")),
    ],
)
def test_parse_url(url: str, expected: HttpObject | BucketObject) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize("url", ["s3://bucket-only", "s3:///key", "gs://b/", "gs://"])
def test_bucket_url_without_bucket_or_key_is_refused(url: str) -> None:
    with pytest.raises(StorageError, match="BUCKET/KEY"):
        parse_url(url)


def test_messages_name_objects_without_credentials() -> None:
    url = "https://user:pw@h.example/a.png?X-Amz-Signature=deadbeef&sig=1#frag"
    assert display_url(url) == "https://h.example/a.png"
    assert str(parse_url(url)) == "https://h.example/a.png"
    text = "Max retries exceeded with url: /b/k.png?X-Amz-Signature=deadbeef (Caused by x)"
    assert redact_queries(text) == "Max retries exceeded with url: /b/k.png?... (Caused by x)"
    # A question in prose is not a query string.
    assert redact_queries("Did you use the right API key?") == "Did you use the right API key?"


PACKAGE = Path(__file__).resolve().parents[1] / "prelabel"
#: Modules of prelabel the storage layer may import: it sits below the Segments connector
#: (retries: the one retry builder API and bucket reads share).
STORAGE_MAY_IMPORT = {"prelabel.errors", "prelabel.config", "prelabel.retries"}
LAZY_ONLY = ("boto3", "botocore", "google")


def test_storage_sits_below_the_connector_and_imports_clients_lazily() -> None:
    for path in sorted((PACKAGE / "storage").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith("prelabel.") and not name.startswith("prelabel.storage"):
                    assert name in STORAGE_MAY_IMPORT, (path.name, name)
        for node in tree.body:  # module level: no client library
            if isinstance(node, ast.Import | ast.ImportFrom):
                module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                assert not (module or "").startswith(LAZY_ONLY), (path.name, module)
