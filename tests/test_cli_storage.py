"""``prelabel run`` on a dataset whose images live where teams keep them (issue 13).

One dataset in the Segments emulator mixes a public URL, private S3 objects in both https URL
styles and as ``s3://``, a ``gs://`` object, an object only Segments can read (it signs the URL
for us), a missing key, a bucket nobody may read and a bucket that does not exist. The buckets
are moto's S3 server and gcp-storage-emulator on 127.0.0.1; the run is the real CLI.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from segments import SegmentsClient

from prelabel.emulator import Emulator
from tests.connector_helpers import assert_valid_prelabel, outcomes_by_uuid
from tests.fixtures.emulator import DEMO_CATEGORIES, png_bytes
from tests.fixtures.storage import AWS_KEY_ID, AWS_SECRET, REGION, GcsFixture, S3Fixture
from tests.test_cli_run import (  # the autouse fixture undoes run's log record factory
    _restore_log_record_factory,  # noqa: F401
    invoke,
    report_of,
)

SIZE = (32, 24)


@pytest.mark.slow
def test_run_reads_every_kind_of_storage_and_names_every_failure(
    emulator: Emulator,
    segments_client: SegmentsClient,
    s3: S3Fixture,
    gcs: GcsFixture,
    tiny_models_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    s3.bucket("team-images", {f"run1/000{i}.png": png_bytes(*SIZE, seed=i) for i in range(1, 6)})
    s3.bucket("locked", {"0006.png": png_bytes(*SIZE, seed=6)}, deny_reads=True)
    gcs.bucket("team-frames", {"0004.png": png_bytes(*SIZE, seed=4)})

    def segments_signs(url: str) -> str | None:
        """Segments was given read access to every S3 bucket of the team."""
        for prefix in (f"{s3.endpoint}/", "s3://"):
            if url.startswith(prefix):
                bucket, key = url[len(prefix) :].split("/", 1)
                return s3.presign(bucket, key)
        return None

    emulator.set_url_signer(segments_signs)
    good_urls = {
        "public.png": emulator.add_asset(png_bytes(*SIZE, seed=0), "public.png"),
        "virtual.png": f"https://team-images.s3.{REGION}.amazonaws.com/run1/0001.png",
        "path.png": f"https://s3.{REGION}.amazonaws.com/team-images/run1/0002.png",
        "s3.png": "s3://team-images/run1/0003.png",
        "gs.png": "gs://team-frames/0004.png",
        "signed.png": f"{s3.endpoint}/team-images/run1/0005.png",  # anonymous GET: 403
    }
    bad = {
        "missing-key.png": (
            "s3://team-images/run1/missing.png",
            "no such key: s3://team-images/run1/missing.png",
        ),
        "no-access.png": ("s3://locked/0006.png", "access denied to s3://locked/0006.png"),
        "no-bucket.png": ("gs://no-such-bucket/x.png", "no such bucket: no-such-bucket"),
    }
    urls = {**good_urls, **{name: url for name, (url, _) in bad.items()}}
    emulator.create_dataset("jane/buckets", categories=list(DEMO_CATEGORIES))
    uuids = dict(
        zip(
            urls,
            emulator.add_samples(
                "jane/buckets",
                [{"name": n, "attributes": {"image": {"url": u}}} for n, u in urls.items()],
            ),
            strict=True,
        )
    )
    caplog.set_level(logging.DEBUG)

    result = invoke(tmp_path, emulator.url, "jane/buckets", models=tiny_models_dir, verbose=True)

    assert result.exit_code == 1, result.output
    report = report_of(tmp_path)
    outcomes = outcomes_by_uuid(report)
    for name in good_urls:
        assert outcomes[uuids[name]]["result"] == "labeled", (name, outcomes[uuids[name]])
        assert emulator.label_write_count(uuids[name]) == 1, name
        category_ids = [c["id"] for c in DEMO_CATEGORIES]
        assert_valid_prelabel(
            segments_client, uuids[name], image_size=SIZE, category_ids=category_ids
        )
    for name, (_, words) in bad.items():
        outcome = outcomes[uuids[name]]
        assert outcome["result"] == "failed", (name, outcome)
        assert words in outcome["reason"], (name, outcome["reason"])
        assert emulator.get_label(uuids[name]) is None
    assert "the URL Segments signed failed too" in outcomes[uuids["no-access.png"]]["reason"]
    assert report["summary"]["counts"] == {"labeled": len(good_urls), "failed": len(bad)}
    printed = result.output + caplog.text + (tmp_path / "out" / "report.json").read_text()
    for secret in (AWS_SECRET, AWS_KEY_ID, "Signature=", "X-Amz-Credential"):
        assert secret not in printed, secret
