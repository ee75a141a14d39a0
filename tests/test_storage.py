"""The storage layer against real servers: moto's S3, gcp-storage-emulator, the Segments emulator.

Plain HTTP goes through the real Segments client's download (``api.storage`` is the reader the
connector uses); S3 and GCS through boto3 and google-cloud-storage talking HTTP to the local
servers. Errors are asserted by class and by the words a user reads in the report.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from prelabel.emulator import Emulator, FaultRule
from prelabel.errors import (
    AccessDeniedError,
    MissingCredentialsError,
    MissingExtraError,
    SampleError,
    StorageError,
    StorageNotFoundError,
    TransientStorageError,
)
from prelabel.segments.client import SampleRef, SegmentsApi
from prelabel.segments.samples import load_frame, load_image
from tests.connector_helpers import free_port, remote_settings
from tests.fixtures.emulator import EMULATOR_API_KEY, png_bytes
from tests.fixtures.storage import AWS_KEY_ID, AWS_SECRET, REGION, GcsFixture, S3Fixture

PNG = png_bytes(8, 6, seed=1)
PRIVATE_KEY = "run1/a b.png"


@pytest.fixture
def api(emulator: Emulator) -> Iterator[SegmentsApi]:
    api = SegmentsApi.connect(EMULATOR_API_KEY, remote_settings(emulator.url))
    yield api
    api.close()


def assert_one_clean_line(message: str) -> None:
    """What a user reads in the report: one line, no traceback, no credential."""
    assert "\n" not in message
    for leak in ("Traceback", AWS_SECRET, AWS_KEY_ID, "Signature=", "X-Amz-"):
        assert leak not in message, (leak, message)


def test_reads_private_s3_objects_in_every_url_form(s3: S3Fixture, api: SegmentsApi) -> None:
    s3.bucket("private", {PRIVATE_KEY: PNG})
    # Private indeed: a plain GET of the object is refused.
    assert requests.get(f"{s3.endpoint}/private/run1/a%20b.png", timeout=5).status_code == 403

    for url in (
        f"s3://private/{PRIVATE_KEY}",
        f"https://private.s3.{REGION}.amazonaws.com/run1/a%20b.png",
        f"https://s3.{REGION}.amazonaws.com/private/run1/a%20b.png",
    ):
        assert api.storage.read(url) == PNG, url


def test_reads_gcs_objects_in_both_url_forms(gcs: GcsFixture, api: SegmentsApi) -> None:
    gcs.bucket("g-bucket", {"frames/a b.png": PNG})

    assert api.storage.read("gs://g-bucket/frames/a b.png") == PNG
    assert api.storage.read("https://storage.googleapis.com/g-bucket/frames/a%20b.png") == PNG


def test_concurrent_reads_from_both_stores(
    s3: S3Fixture, gcs: GcsFixture, api: SegmentsApi
) -> None:
    images = {f"k{i}.png": png_bytes(8, 6, seed=i) for i in range(12)}
    s3.bucket("many", images)
    gcs.bucket("many", images)
    urls = [f"{scheme}://many/{key}" for key in images for scheme in ("s3", "gs")]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(api.storage.read, urls))

    assert results == [images[url.rsplit("/", 1)[1]] for url in urls]


@pytest.mark.parametrize(
    ("url", "error", "words"),
    [
        ("s3://private/missing.png", StorageNotFoundError, "no such key: s3://private/missing.png"),
        ("s3://no-such-bucket/x.png", StorageNotFoundError, "no such bucket: no-such-bucket"),
        ("s3://locked/x.png", AccessDeniedError, "access denied to s3://locked/x.png"),
        ("gs://g-bucket/missing.png", StorageNotFoundError, "no such key: gs://g-bucket/missing"),
        ("gs://no-such-bucket/x.png", StorageNotFoundError, "no such bucket: no-such-bucket"),
    ],
)
def test_permanent_errors_are_named_and_not_retried(
    s3: S3Fixture,
    gcs: GcsFixture,
    api: SegmentsApi,
    caplog: pytest.LogCaptureFixture,
    url: str,
    error: type[StorageError],
    words: str,
) -> None:
    s3.bucket("private", {PRIVATE_KEY: PNG})
    s3.bucket("locked", {"x.png": PNG}, deny_reads=True)
    gcs.bucket("g-bucket", {"a.png": PNG})

    with pytest.raises(error) as raised:
        api.storage.read(url)

    assert words in str(raised.value)
    assert_one_clean_line(str(raised.value))
    assert "retrying" not in caplog.text


def test_without_credentials_public_objects_read_and_private_ones_say_where_we_looked(
    s3: S3Fixture, api: SegmentsApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.bucket("team", {PRIVATE_KEY: PNG})
    s3.admin.put_object(Bucket="team", Key="public.png", Body=PNG, ACL="public-read")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")

    assert api.storage.read("s3://team/public.png") == PNG
    with pytest.raises(MissingCredentialsError) as raised:
        api.storage.read(f"https://team.s3.{REGION}.amazonaws.com/run1/a%20b.png")

    message = str(raised.value)
    assert message.startswith("no AWS credentials found for bucket team")
    for place in ("AWS_ACCESS_KEY_ID", "~/.aws/credentials", "AWS_PROFILE", "instance role"):
        assert place in message
    assert_one_clean_line(message)
    assert "botocore" not in message


def test_a_refused_read_is_retried_once_with_the_url_segments_signs(
    s3: S3Fixture, api: SegmentsApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.bucket("team", {PRIVATE_KEY: PNG})
    asked: list[str] = []

    def sign() -> str:
        asked.append("signed")
        return s3.presign("team", PRIVATE_KEY)

    # An S3-compatible store at a host we cannot classify: a plain GET, refused (403).
    plain = f"{s3.endpoint}/team/run1/a%20b.png"
    assert api.storage.read(plain, signed_url=sign) == PNG
    # No credentials at all: the anonymous read is refused, Segments' access is not.
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert api.storage.read(f"s3://team/{PRIVATE_KEY}", signed_url=sign) == PNG
    assert asked == ["signed", "signed"]
    # A read that works never asks Segments.
    s3.admin.put_object(Bucket="team", Key="public.png", Body=PNG, ACL="public-read")
    assert api.storage.read("s3://team/public.png", signed_url=sign) == PNG
    assert len(asked) == 2


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("bucket key missing (404)", StorageNotFoundError),
        ("plain URL missing (404)", StorageNotFoundError),
        ("plain URL answering 503", TransientStorageError),
    ],
)
def test_only_a_refused_read_asks_segments_to_sign(
    s3: S3Fixture, api: SegmentsApi, emulator: Emulator, case: str, error: type[StorageError]
) -> None:
    """A missing object or a server in trouble is not a refusal: the signed URL is never asked
    for (it would hide the real error behind Segments' copy), and the error keeps its type."""
    s3.bucket("team", {PRIVATE_KEY: PNG})
    asked: list[str] = []

    def sign() -> str:  # would succeed if asked: the fallback cannot hide behind a failure
        asked.append("signed")
        return s3.presign("team", PRIVATE_KEY)

    asset = emulator.add_asset(PNG, "busy.png")
    url = {
        "bucket key missing (404)": "s3://team/missing.png",
        "plain URL missing (404)": emulator.url + "s3/assets/jane/nothing-here.png",
        "plain URL answering 503": asset,
    }[case]
    emulator.set_faults([FaultRule(path="/s3/assets/*", error_rate=1.0, error_statuses=(503,))])
    if case != "plain URL answering 503":
        emulator.set_faults([])

    with pytest.raises(error):
        api.storage.read(url, signed_url=sign)

    assert asked == []


def test_credentials_boto3_cannot_refresh_at_the_read_are_missing_credentials(
    s3: S3Fixture, api: SegmentsApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A credential_process whose short-lived credentials cannot be renewed: boto3 builds the
    client, then ``get_object`` raises CredentialRetrievalError while signing. That is a
    credentials problem to fix where they come from, not a storage error."""
    s3.bucket("team", {PRIVATE_KEY: PNG})
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    expires = (datetime.now(UTC) + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    first = {
        "Version": 1,
        "AccessKeyId": AWS_KEY_ID,
        "SecretAccessKey": AWS_SECRET,
        "Expiration": expires,  # inside boto3's mandatory refresh window: renewed at the read
    }
    marker = tmp_path / "issued"
    script = tmp_path / "credentials.sh"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ -e "{marker}" ]; then echo "token service unreachable" >&2; exit 1; fi\n'
        f'touch "{marker}"\n'
        f"echo '{json.dumps(first)}'\n"
    )
    script.chmod(0o755)
    config = tmp_path / "aws-config"
    config.write_text(f"[default]\ncredential_process = {script}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))

    with pytest.raises(MissingCredentialsError) as raised:
        api.storage.read(f"s3://team/{PRIVATE_KEY}")

    assert marker.exists()  # the first issue did happen: the failure was the renewal
    message = str(raised.value)
    assert "for bucket team" in message
    for place in ("AWS_ACCESS_KEY_ID", "~/.aws/credentials", "AWS_PROFILE", "instance role"):
        assert place in message
    assert_one_clean_line(message)


def test_when_the_signed_url_is_refused_too_both_reasons_are_named(
    s3: S3Fixture, api: SegmentsApi, caplog: pytest.LogCaptureFixture
) -> None:
    s3.bucket("locked", {"x.png": PNG}, deny_reads=True)
    caplog.set_level(logging.DEBUG, logger="prelabel")

    with pytest.raises(AccessDeniedError) as raised:
        api.storage.read("s3://locked/x.png", signed_url=lambda: s3.presign("locked", "x.png"))
    with pytest.raises(AccessDeniedError, match=r"access denied to s3://locked/x\.png"):
        api.storage.read("s3://locked/x.png", signed_url=lambda: None)

    message = str(raised.value)
    assert "access denied to s3://locked/x.png" in message
    assert f"the URL Segments signed failed too: access denied to {s3.endpoint}/locked/x" in message
    assert_one_clean_line(message)
    assert AWS_KEY_ID not in caplog.text and "Signature=" not in caplog.text


def test_signed_url_query_never_reaches_a_log_line(
    api: SegmentsApi, caplog: pytest.LogCaptureFixture
) -> None:
    """A signed URL whose host is down: the download's retry warnings quote the URL."""
    dead = f"http://127.0.0.1:{free_port()}"
    signed = f"{dead}/b/k.png?X-Amz-Credential={AWS_KEY_ID}&X-Amz-Signature=f00d"
    refused = f"http://127.0.0.1:{free_port()}/b/k.png"

    with pytest.raises(TransientStorageError):
        api.storage.read(refused, signed_url=lambda: signed)

    assert "retrying" in caplog.text  # the download did retry, and logged it
    assert AWS_KEY_ID not in caplog.text and "f00d" not in caplog.text


def test_segments_signs_image_and_frame_urls_and_load_image_uses_them(
    emulator: Emulator, s3: S3Fixture, api: SegmentsApi
) -> None:
    s3.bucket("team", {"a.png": PNG, "f1.png": PNG})
    emulator.create_dataset("jane/private")
    emulator.create_dataset("jane/private-clips", task_type="image-segmentation-sequence")
    image_url, frame_url = f"{s3.endpoint}/team/a.png", f"{s3.endpoint}/team/f1.png"
    image_uuid = emulator.add_image_sample("jane/private", "a.png", image_url)
    [sequence_uuid] = emulator.add_samples(
        "jane/private-clips",
        [{"name": "seq", "attributes": {"frames": [{"image": {"url": frame_url}}]}}],
    )
    sample = SampleRef(uuid=image_uuid, name="a.png", image_url=image_url, label_status=None)

    with pytest.raises(SampleError, match="access denied"):  # Segments signs nothing yet
        load_image(api, sample, max_pixels=10_000)
    assert api.signed_url(image_uuid, image_url) is None

    emulator.set_url_signer(lambda url: s3.presign("team", url.rsplit("/", 1)[1]))
    assert load_image(api, sample, max_pixels=10_000).size == (8, 6)
    signed_frame = api.signed_url(sequence_uuid, frame_url)
    assert signed_frame is not None and "Signature=" in signed_frame
    assert api.storage.read(frame_url, signed_url=lambda: signed_frame) == PNG
    sequence = api.get_sample(sequence_uuid, "ground-truth")
    assert sequence is not None
    assert load_frame(api, sequence, 0, max_pixels=10_000).size == (8, 6)  # signed on refusal
    assert api.signed_url(sequence_uuid, "http://elsewhere/x.png") is None
    assert api.signed_url("00000000-0000-0000-0000-000000000000", image_url) is None


@pytest.mark.parametrize(
    ("module", "url", "extra"),
    [
        ("boto3", "s3://b/k.png", "prelabel[s3]"),
        ("google.cloud.storage", "gs://b/k.png", "prelabel[gcs]"),
    ],
)
def test_a_bucket_url_without_its_extra_names_the_extra(
    api: SegmentsApi, monkeypatch: pytest.MonkeyPatch, module: str, url: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed

    with pytest.raises(MissingExtraError, match=re.escape(f"pip install '{extra}'")):
        api.storage.read(url, signed_url=lambda: None)


def test_transient_storage_errors_are_retried_with_backoff(
    s3: S3Fixture,
    api: SegmentsApi,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing there

    with pytest.raises(TransientStorageError, match=r"s3://b/k\.png"):
        api.storage.read("s3://b/k.png")

    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert [m.split("(")[1].split(")")[0] for m in retries] == [
        "attempt 1 of 4",
        "attempt 2 of 4",
        "attempt 3 of 4",
    ]
    assert AWS_SECRET not in caplog.text


def test_size_limit_applies_to_bucket_reads(
    s3: S3Fixture, gcs: GcsFixture, emulator: Emulator
) -> None:
    big = b"\0" * 5_000
    s3.bucket("big-objects", {"big.bin": big, "small.bin": b"\0" * 100})
    gcs.bucket("big-objects", {"big.bin": big})
    api = SegmentsApi.connect(
        EMULATOR_API_KEY, remote_settings(emulator.url, max_image_bytes=1_000)
    )
    try:
        assert api.storage.read("s3://big-objects/small.bin") == b"\0" * 100
        for url in ("s3://big-objects/big.bin", "gs://big-objects/big.bin"):
            with pytest.raises(StorageError, match="over the 1,000"):
                api.storage.read(url)
    finally:
        api.close()
