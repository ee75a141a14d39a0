"""``prelabel run`` as a user runs it (in process, through click), against the emulator.

Exit codes: 0 when every selected sample was labeled or skipped, 1 when any failed, 2 for usage,
config, key or connection problems, always as one line on stderr without a traceback. Results
are read back from the emulator and from the report file.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner, Result
from segments import SegmentsClient

from prelabel.cli import main
from prelabel.cli._common import install_redaction
from prelabel.emulator import Emulator, FaultRule
from prelabel.run.policy import parks
from prelabel.state import LABELED, PARKED, StateStore
from tests.connector_helpers import (
    SAM3_PIPELINE,
    assert_valid_prelabel,
    free_port,
    human_attributes,
    outcomes_by_uuid,
    read_report,
    requests_matching,
    wait_for,
    write_config,
)
from tests.fixtures.emulator import (
    DEMO_CATEGORIES,
    EMULATOR_API_KEY,
    SeededDataset,
    png_bytes,
    seed_dataset_via_sdk,
)
from tests.serve_helpers import new_secret, parse_metrics
from tests.test_serve_cli import start_serve

CATEGORY_IDS = [c["id"] for c in DEMO_CATEGORIES]
GT = "ground-truth"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _restore_log_record_factory() -> Iterator[None]:
    """``run`` installs a redacting record factory process-wide; undo it after each test."""
    factory = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(factory)


def invoke(
    tmp_path: Path,
    api_url: str,
    dataset: str,
    *extra: str,
    key: str | None = EMULATOR_API_KEY,
    models: Path | None = None,
    config: Path | None = None,
    verbose: bool = False,
) -> Result:
    config = config or write_config(tmp_path / "config.yaml")
    args = [
        *(["-vv"] if verbose else []),
        "run",
        "--dataset",
        dataset,
        "--api-url",
        api_url,
        "--state-dir",
        str(tmp_path / "state"),
        "--output-dir",
        str(tmp_path / "out"),
        "--config",
        str(config),
        "-q",
        *(["--models", str(models)] if models else []),
        *extra,
    ]
    env = {"SEGMENTS_API_KEY": key} if key is not None else {}
    return CliRunner().invoke(main, args, env=env)


def report_of(tmp_path: Path) -> dict[str, Any]:
    return read_report(tmp_path / "out" / "report.json")


def assert_one_line_error(result: Result, *fragments: str) -> str:
    """Exit code 2 and one ``Error: ...`` line, the last on stderr, without a traceback.

    Lines before it may only be the retry warnings the run logged on its way.
    """
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit)  # a handled exit, not a crash
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    assert errors == lines[-1:], result.stderr
    assert all("retrying in" in line for line in lines[:-1]), result.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    for crash in ("Traceback", "AttributeError"):
        assert crash not in result.output
    return errors[0]


# Success and per-sample failure ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["grounded_sam", "sam3"])
def test_run_labels_every_sample_and_exits_0(
    emulator: Emulator,
    segments_client: SegmentsClient,
    seeded_dataset: SeededDataset,
    tiny_models_dir: Path,
    tmp_path: Path,
    backend: str,
) -> None:
    pipeline = {"sam3": SAM3_PIPELINE}.get(backend)
    config = write_config(tmp_path / "config.yaml", backend=backend, **_pipeline(pipeline))
    result = invoke(
        tmp_path, emulator.url, seeded_dataset.full_name, models=tiny_models_dir, config=config
    )

    assert result.exit_code == 0, result.output
    assert report_of(tmp_path)["version"] == 1  # the schema predict writes too (README)
    outcomes = outcomes_by_uuid(report_of(tmp_path))
    assert list(outcomes) == list(seeded_dataset.sample_uuids)
    assert {o["result"] for o in outcomes.values()} == {"labeled"}
    for uuid in seeded_dataset.sample_uuids:
        assert emulator.label_write_count(uuid) == 1
        attributes, _ = assert_valid_prelabel(
            segments_client,
            uuid,
            image_size=seeded_dataset.image_size,
            category_ids=CATEGORY_IDS,
        )
        assert attributes["annotations"], "an empty pre-label"
    tiny = "(sam3)" if backend == "sam3" else "(grounding_dino, sam, clipseg)"
    assert f"tiny random-weight models in use: masks are meaningless {tiny}" in result.stderr
    assert f"report: {tmp_path / 'out' / 'report.json'}" in result.stderr


def _pipeline(pipeline: Any) -> dict[str, Any]:
    return {} if pipeline is None else {"pipeline": pipeline}


@pytest.mark.slow
def test_run_exits_1_when_a_sample_fails_and_reports_every_outcome(
    emulator: Emulator, tiny_models_dir: Path, tmp_path: Path
) -> None:
    emulator.create_dataset("jane/mixed", categories=list(DEMO_CATEGORIES))
    samples = [
        {
            "name": "a.png",
            "attributes": {"image": {"url": emulator.add_asset(png_bytes(32, 24, 1), "a.png")}},
        },
        {
            "name": "b.png",
            "attributes": {"image": {"url": emulator.add_asset(b"garbage", "b.png")}},
        },
    ]
    good, bad = emulator.add_samples("jane/mixed", samples)

    result = invoke(tmp_path, emulator.url, "jane/mixed", models=tiny_models_dir)

    assert result.exit_code == 1, result.output
    report = report_of(tmp_path)
    outcomes = outcomes_by_uuid(report)
    assert outcomes[good]["result"] == "labeled"
    assert outcomes[bad]["result"] == "failed"
    assert "not a recognised image format" in outcomes[bad]["reason"]
    assert report["summary"]["counts"] == {"labeled": 1, "failed": 1}
    assert emulator.label_write_count(good) == 1 and emulator.get_label(bad) is None


# Flags --------------------------------------------------------------------------------------------


def park_one_sample(emulator: Emulator, state_dir: Path) -> str:
    """``jane/demo`` with one good sample that earlier runs parked (3 failures of its own)."""
    emulator.create_dataset("jane/demo", categories=list(DEMO_CATEGORIES))
    url = emulator.add_asset(png_bytes(32, 24, seed=1), "a.png")
    [uuid] = emulator.add_samples(
        "jane/demo", [{"name": "a.png", "attributes": {"image": {"url": url}}}]
    )
    with StateStore.in_dir(state_dir) as store:
        for _ in range(3):
            stage = store.mark_failed(
                "jane/demo", GT, uuid, "a.png", "was broken", parks=lambda n: parks(n, 3)
            )
    assert stage == PARKED
    return uuid


def first_cycle_done(url: str) -> bool:
    try:
        metrics = parse_metrics(requests.get(url + "metrics", timeout=2).text)
    except requests.ConnectionError:
        return False
    return metrics.get("prelabel_last_cycle_success_timestamp_seconds", 0) > 0


@pytest.mark.slow
@pytest.mark.parametrize("command", ["run", "sync", "serve"])
def test_retry_failed_on_the_command_line_retries_a_parked_sample(
    emulator: Emulator, tiny_models_dir: Path, tmp_path: Path, command: str
) -> None:
    """The flag as a user types it reaches the run: the parked sample is labeled."""
    uuid = park_one_sample(emulator, tmp_path / "state")
    if command == "run":
        left_alone = invoke(tmp_path, emulator.url, "jane/demo", models=tiny_models_dir)
        assert left_alone.exit_code == 0, left_alone.output
        assert outcomes_by_uuid(report_of(tmp_path))[uuid]["result"] == "skipped"
        assert emulator.get_label(uuid) is None  # parked indeed, without the flag
        result = invoke(
            tmp_path, emulator.url, "jane/demo", "--retry-failed", models=tiny_models_dir
        )
        assert result.exit_code == 0, result.output
    elif command == "sync":
        args = ["sync", "--dataset", "jane/demo", "--api-url", emulator.url, "--once", "-q"]
        args += ["--retry-failed", "--models", str(tiny_models_dir)]
        args += ["--state-dir", str(tmp_path / "state"), "--output-dir", str(tmp_path / "out")]
        args += ["--config", str(write_config(tmp_path / "config.yaml"))]
        result = CliRunner().invoke(main, args, env={"SEGMENTS_API_KEY": EMULATOR_API_KEY})
        assert result.exit_code == 0, result.output
    else:
        process = start_serve(tmp_path, emulator, tiny_models_dir, new_secret(), "--retry-failed")
        try:
            url = process.stdout.readline().decode().strip()
            wait_for(lambda: first_cycle_done(url), 90, "serve's first sync cycle")
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0
        finally:
            if process.poll() is None:
                process.kill()
            process.communicate()
    label = emulator.get_label(uuid)
    assert label is not None, "the parked sample was left alone"
    assert label["label_status"] == "PRELABELED"
    with StateStore.in_dir(tmp_path / "state") as store:
        assert store.get("jane/demo", GT, uuid).stage == LABELED  # type: ignore[union-attr]


@pytest.mark.slow
def test_dry_run_with_limit_writes_nothing_and_saves_two_labels_locally(
    emulator: Emulator, seeded_dataset: SeededDataset, tiny_models_dir: Path, tmp_path: Path
) -> None:
    emulator.clear_requests()

    result = invoke(
        tmp_path,
        emulator.url,
        seeded_dataset.full_name,
        "--dry-run",
        "--limit",
        "2",
        models=tiny_models_dir,
    )

    assert result.exit_code == 0, result.output
    assert [r for r in emulator.requests if r.method != "GET"] == []
    outcomes = outcomes_by_uuid(report_of(tmp_path))
    assert list(outcomes) == list(seeded_dataset.sample_uuids[:2])
    assert {o["result"] for o in outcomes.values()} == {"dry-run"}
    saved = sorted(p.name for p in (tmp_path / "out" / "dry-run").iterdir())
    assert saved == sorted(
        f"{u}.{ext}" for u in seeded_dataset.sample_uuids[:2] for ext in ("json", "png")
    )


@pytest.mark.slow
def test_overwrite_prelabels_flag_redoes_prelabeled_only(
    emulator: Emulator,
    segments_client: SegmentsClient,
    seeded_dataset: SeededDataset,
    tiny_models_dir: Path,
    tmp_path: Path,
) -> None:
    u = seeded_dataset.sample_uuids
    human = human_attributes(segments_client, seeded_dataset.image_size)
    emulator.write_label(u[0], "ground-truth", human, label_status="PRELABELED")
    emulator.write_label(u[1], "ground-truth", human, label_status="LABELED")
    labeled_before = emulator.get_label(u[1])

    result = invoke(
        tmp_path,
        emulator.url,
        seeded_dataset.full_name,
        "--overwrite-prelabels",
        models=tiny_models_dir,
    )

    assert result.exit_code == 0, result.output
    assert list(outcomes_by_uuid(report_of(tmp_path))) == [u[0], u[2]]
    assert emulator.label_write_count(u[0]) == 1 and emulator.label_write_count(u[2]) == 1
    assert emulator.get_label(u[1]) == labeled_before
    assert emulator.label_write_count(u[1]) == 0


# Problems that stop the run before any sample: exit 2, one line ----------------------------------


def test_a_wrong_key_is_one_line_exit_2_without_the_key(
    emulator: Emulator, seeded_dataset: SeededDataset, tmp_path: Path
) -> None:
    wrong = "sk-wrong-4f1e2d3c"

    result = invoke(tmp_path, emulator.url, seeded_dataset.full_name, key=wrong)

    line = assert_one_line_error(result, "API key was refused")
    assert wrong not in result.output and wrong not in line
    assert emulator.label_write_counts() == {}


def test_no_key_at_all_is_exit_2(
    emulator: Emulator, seeded_dataset: SeededDataset, tmp_path: Path
) -> None:
    emulator.clear_requests()

    result = invoke(tmp_path, emulator.url, seeded_dataset.full_name, key=None)

    assert_one_line_error(result, "SEGMENTS_API_KEY")
    assert emulator.requests == []


def test_a_server_down_at_start_is_one_clear_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    config = write_config(tmp_path / "c.yaml", retry_attempts=5, connect_timeout_s=0.5)
    started = time.monotonic()

    result = invoke(tmp_path, url, "jane/demo", key="some-key", config=config)

    # Nothing listens: said at once, not after retries (5 attempts would take seconds).
    assert_one_line_error(result, "nothing listens at", url, "is the emulator running")
    elapsed = time.monotonic() - started
    print(f"refused connection reported after {elapsed:.2f} s")
    assert elapsed < 1.5


def test_a_server_that_hangs_up_at_start_is_still_retried(tmp_path: Path) -> None:
    """Only a refused connection skips the retries: a port that accepts and hangs up is
    server trouble, retried with backoff, then reported as unreachable."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        threading.Thread(target=_hang_up_on_everyone, args=(listener,), daemon=True).start()
        config = write_config(tmp_path / "c.yaml", retry_attempts=2, connect_timeout_s=0.5)

        result = invoke(tmp_path, url, "jane/demo", key="some-key", config=config)

    assert_one_line_error(result, "cannot reach", url)


def _hang_up_on_everyone(listener: socket.socket) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        conn.close()


@pytest.mark.slow
def test_a_server_down_at_start_as_a_real_process(tmp_path: Path) -> None:
    """The same through ``python -m prelabel``: real logging setup, real stderr."""
    url = f"http://127.0.0.1:{free_port()}/"
    config = write_config(tmp_path / "c.yaml", retry_attempts=2, connect_timeout_s=0.5)
    env = {**os.environ, "SEGMENTS_API_KEY": "sk-down-1234"}
    command = [sys.executable, "-m", "prelabel", "run", "--dataset", "jane/demo"]
    command += ["--api-url", url, "--config", str(config), "--state-dir", str(tmp_path / "s")]

    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        f"Error: nothing listens at {url}; is the emulator running (or --api-url right)?"
    ], done.stderr
    assert "Traceback" not in done.stderr and "AttributeError" not in done.stderr
    assert "sk-down-1234" not in done.stderr + done.stdout


def test_a_dataset_with_another_task_type_is_refused(emulator: Emulator, tmp_path: Path) -> None:
    # Keypoints: prelabel writes bitmaps, boxes and polygons, not points.
    emulator.create_dataset("jane/points", task_type="keypoints", categories=list(DEMO_CATEGORIES))
    url = emulator.add_asset(png_bytes(32, 24, 0), "a.png")
    emulator.add_image_sample("jane/points", "a.png", url)

    result = invoke(tmp_path, emulator.url, "jane/points")

    assert_one_line_error(result, "'keypoints'", "segmentation-bitmap")
    assert emulator.label_write_counts() == {}


def test_a_config_naming_a_category_the_dataset_lacks_is_refused(
    emulator: Emulator, seeded_dataset: SeededDataset, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "c.yaml", categories={"truck": {"prompt": "a truck"}})

    result = invoke(tmp_path, emulator.url, seeded_dataset.full_name, config=config)

    assert_one_line_error(result, "'truck'", "unknown category")
    assert emulator.label_write_counts() == {}


def test_a_grounding_dino_threshold_under_sam3_is_refused_naming_the_backend(
    emulator: Emulator, seeded_dataset: SeededDataset, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "c.yaml", backend="sam3", categories={"person": {"box_threshold": 0.4}}
    )

    result = invoke(tmp_path, emulator.url, seeded_dataset.full_name, config=config)

    assert_one_line_error(result, "'person'", "box_threshold", "sam3 back-end")
    assert emulator.label_write_counts() == {}


def test_a_missing_dataset_is_named(emulator: Emulator, tmp_path: Path) -> None:
    result = invoke(tmp_path, emulator.url, "jane/nope")

    assert_one_line_error(result, "jane/nope", "not found")


def test_a_hanging_server_times_out_and_fails_cleanly(
    emulator: Emulator, seeded_dataset: SeededDataset, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "c.yaml", read_timeout_s=0.3, retry_attempts=2)
    emulator.set_faults([FaultRule(path="/datasets/*/samples/", hang_rate=1.0, hang_s=10.0)])
    started = time.monotonic()

    result = invoke(tmp_path, emulator.url, seeded_dataset.full_name, config=config)

    assert_one_line_error(result, "connection problem")
    assert time.monotonic() - started < 5
    assert len(requests_matching(emulator, "GET", "/datasets/", fault="hang")) == 2
    assert report_of(tmp_path)["samples"] == []  # the report is still closed and valid


# The API key never appears --------------------------------------------------------------------


@pytest.mark.slow
def test_the_api_key_appears_in_no_output_log_or_file(
    tiny_models_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = "sk-live-7Q2xNw9RzP4k-DO-NOT-LEAK"
    with Emulator(key) as emulator:
        client = SegmentsClient(key, api_url=emulator.url)
        seeded = seed_dataset_via_sdk(client, n_images=2)
        bad = emulator.add_image_sample(
            seeded.full_name, "bad.png", emulator.add_asset(b"not an image", "bad.png")
        )
        client.close()
        # Retries log warnings, the bad image logs an error, -vv logs everything else.
        emulator.set_faults(
            [
                FaultRule(
                    path="/labels/*", method="PUT", throttle_rate=1.0, retry_after_s=0, times=1
                ),
                FaultRule(path="/datasets/*", error_rate=1.0, times=1),
            ]
        )
        with caplog.at_level(logging.DEBUG):
            result = invoke(
                tmp_path,
                emulator.url,
                seeded.full_name,
                key=key,
                models=tiny_models_dir,
                verbose=True,
            )

    assert result.exit_code == 1, result.output  # the bad image failed, the rest was labeled
    assert outcomes_by_uuid(report_of(tmp_path))[bad]["result"] == "failed"
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    assert any(r.name.startswith("urllib3") for r in caplog.records)  # debug logging was on
    texts = {
        "stdout": result.stdout,
        "stderr": result.stderr,
        "logs": caplog.text,
        "log args": " ".join(repr(r.args) for r in caplog.records),
    }
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "report.json" for p in files)
    for name, text in texts.items():
        assert key not in text, name
    for path in files:
        assert key.encode() not in path.read_bytes(), path


def test_redaction_masks_the_key_in_any_log_record(caplog: pytest.LogCaptureFixture) -> None:
    install_redaction("sk-secret-123")

    with caplog.at_level(logging.INFO):
        logging.getLogger("prelabel.test").info("header was %s", "APIKey sk-secret-123")

    assert caplog.records[-1].getMessage() == "header was APIKey ***"
    assert "sk-secret-123" not in caplog.text
