"""The failure budget: a sample that keeps failing for reasons of its own is parked.

After ``worker.max_attempts`` failures that are not server trouble, later runs (and sync
cycles) leave the sample alone, no download and no error log, until ``--retry-failed``;
``prelabel status`` lists it with its reason.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from prelabel.cli import main
from prelabel.config import WorkerSettings
from prelabel.emulator import Emulator, FaultRule
from prelabel.pipeline.pipeline import Pipeline
from prelabel.run.policy import parks
from prelabel.state import FAILED, LABELED, PARKED, UPLOADED, StateStore
from tests.connector_helpers import (
    make_settings,
    requests_matching,
    run_worker,
    state_record,
    url_path,
)
from tests.fixtures.emulator import DEMO_CATEGORIES, png_bytes

GT = "ground-truth"


def test_a_sample_failing_max_attempts_times_is_parked_until_retry_failed(
    emulator: Emulator, pipeline: Pipeline, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.create_dataset("jane/budget", categories=list(DEMO_CATEGORIES))
    bad_url = emulator.add_asset(b"this is not an image", "bad.png")
    good_url = emulator.add_asset(png_bytes(48, 32, seed=1), "good.png")
    bad, good = emulator.add_samples(
        "jane/budget",
        [
            {"name": "bad.png", "attributes": {"image": {"url": bad_url}}},
            {"name": "good.png", "attributes": {"image": {"url": good_url}}},
        ],
    )
    settings = make_settings(emulator.url).model_copy(
        update={"worker": WorkerSettings(engine="sequential", max_attempts=2)}
    )

    def run(n: int, **options: object) -> dict[str, dict[str, object]]:
        return run_worker(
            emulator,
            tmp_path,
            pipeline,
            "jane/budget",
            settings=settings,
            output_dir=f"out{n}",
            **options,
        ).outcomes

    first = run(1)
    assert first[bad]["result"] == "failed" and first[good]["result"] == "labeled"
    assert state_record(tmp_path, "jane/budget", bad).stage == FAILED
    with caplog.at_level(logging.WARNING, logger="prelabel.run.recorder"):
        second = run(2)
    assert second[bad]["result"] == "failed"
    record = state_record(tmp_path, "jane/budget", bad)
    assert record is not None and record.stage == PARKED and record.attempts == 2
    assert any("parked after 2 failures" in r.getMessage() for r in caplog.records)

    emulator.clear_requests()
    third = run(3)
    assert third[bad]["result"] == "skipped"
    assert str(third[bad]["reason"]).startswith("parked after 2 failures (")
    assert requests_matching(emulator, "GET", url_path(bad_url)) == []  # left alone

    retried = run(4, retry_failed=True)
    assert retried[bad]["result"] == "failed"
    assert [r.path for r in requests_matching(emulator, "GET", url_path(bad_url))]
    assert state_record(tmp_path, "jane/budget", good).stage == LABELED

    status = CliRunner().invoke(
        main, ["status", "--dataset", "jane/budget", "--state-dir", str(tmp_path / "state")]
    )
    assert status.exit_code == 0, status.output
    assert "parked (1;" in status.output
    assert f"bad.png ({bad}): 3 failures, last: " in status.output
    assert "labeled" in status.output and "leases" not in status.output


def test_an_image_server_answering_503_run_after_run_never_parks_the_sample(
    emulator: Emulator, pipeline: Pipeline, tmp_path: Path
) -> None:
    """Server trouble is not the sample's fault: through the steps and the recorder of a real
    run, a 503 image stays failed, with no attempt counted, however many runs see it."""
    emulator.create_dataset("jane/busy", categories=list(DEMO_CATEGORIES))
    busy_url = emulator.add_asset(png_bytes(48, 32, seed=2), "busy.png")
    good_url = emulator.add_asset(png_bytes(48, 32, seed=1), "good.png")
    busy, good = emulator.add_samples(
        "jane/busy",
        [
            {"name": "busy.png", "attributes": {"image": {"url": busy_url}}},
            {"name": "good.png", "attributes": {"image": {"url": good_url}}},
        ],
    )
    emulator.set_faults([FaultRule(path=url_path(busy_url), error_rate=1.0, error_statuses=(503,))])
    settings = make_settings(emulator.url).model_copy(
        update={"worker": WorkerSettings(engine="sequential", max_attempts=2)}
    )

    for n in range(3):  # more runs than max_attempts
        outcomes = run_worker(
            emulator,
            tmp_path,
            pipeline,
            "jane/busy",
            settings=settings,
            output_dir=f"out{n}",
        ).outcomes
        assert outcomes[busy]["result"] == "failed", n
        assert "503" in str(outcomes[busy]["reason"])
        record = state_record(tmp_path, "jane/busy", busy)
        assert record is not None and (record.stage, record.attempts) == (FAILED, 0), n

    assert requests_matching(emulator, "GET", url_path(busy_url))  # really asked, each run
    assert state_record(tmp_path, "jane/busy", good).stage == LABELED  # type: ignore[union-attr]


def test_server_trouble_does_not_count_toward_the_budget(tmp_path: Path) -> None:
    def at_2(attempts: int) -> bool:
        return parks(attempts, max_attempts=2)

    with StateStore.in_dir(tmp_path) as store:
        for _ in range(5):
            stage = store.mark_failed("d/s", GT, "u1", "s1", "503", transient=True, parks=at_2)
        assert stage == FAILED
        assert store.get("d/s", GT, "u1").attempts == 0  # type: ignore[union-attr]
        assert store.mark_failed("d/s", GT, "u1", "s1", "bad", parks=at_2) == FAILED
        assert store.mark_failed("d/s", GT, "u1", "s1", "bad", parks=at_2) == PARKED


def test_the_policy_parks_at_max_attempts_and_the_store_keeps_an_upload_usable(
    tmp_path: Path,
) -> None:
    assert [parks(n, max_attempts=3) for n in range(5)] == [False, False, False, True, True]
    with StateStore.in_dir(tmp_path) as store:
        store.mark_uploaded(
            "d/s", GT, "u1", "s1", asset_url="http://a/1.png", attributes={}, score=1
        )
        for _ in range(3):
            assert (
                store.mark_failed("d/s", GT, "u1", "s1", "bad", parks=lambda _n: True) == UPLOADED
            )
        record = store.get("d/s", GT, "u1")
        assert record is not None and record.attempts == 3 and record.asset_url == "http://a/1.png"


def test_status_lists_leases_held(tmp_path: Path) -> None:
    with StateStore.in_dir(tmp_path) as store:
        assert store.claim("jane/d", GT, "uuid-1", "host:1:abc", 60.0) is None

    result = CliRunner().invoke(
        main, ["status", "--dataset", "jane/d", "--state-dir", str(tmp_path)]
    )

    assert result.exit_code == 0, result.output
    assert "no samples recorded yet" in result.output
    assert "leases (1):" in result.output and "uuid-1: host:1:abc, expires in" in result.output
