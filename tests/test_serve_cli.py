"""``prelabel serve`` as a real process (``python -m prelabel``) with the tiny models.

The process is started like production (API key in the environment, secret in a file, JSON
logs), the test signs deliveries with ``svix`` and sends SIGTERM in the middle of a burst. It
judges by the exit code, what the emulator holds, the state file, and the log's structure (every
line one JSON object, the key and the secret nowhere), not by log wording. Usage errors run in
process through click.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from segments import SegmentsClient

from prelabel.cli import main
from prelabel.emulator import Emulator
from tests.connector_helpers import assert_valid_prelabel, wait_for, write_config
from tests.fixtures.emulator import DEMO_CATEGORIES, EMULATOR_API_KEY, png_bytes
from tests.serve_helpers import new_secret, sample_created, signed

REPO = Path(__file__).resolve().parents[1]
BURST = 12


@pytest.fixture
def private_emulator() -> Iterator[Emulator]:
    """An emulator whose key is long and random, so the test can look for it in the log."""
    with Emulator(secrets.token_hex(20), username="jane") as server:
        yield server


def start_serve(tmp_path: Path, emulator: Emulator, models: Path, secret: str, *extra: str) -> Any:
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(secret + "\n")
    command = [
        sys.executable,
        "-m",
        "prelabel",
        "serve",
        "--dataset",
        "jane/demo",
        "--api-url",
        emulator.url,
        "--models",
        str(models),
        "--config",
        str(write_config(tmp_path / "config.yaml")),
        "--state-dir",
        str(tmp_path / "state"),
        "--output-dir",
        str(tmp_path / "out"),
        "--webhook-secret-file",
        str(secret_file),
        "--port",
        "0",
        "--interval",
        "1h",
        *extra,
    ]
    env = {**os.environ, "SEGMENTS_API_KEY": emulator.api_key}
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


@pytest.mark.slow
def test_sigterm_mid_burst_exits_0_with_nothing_half_written(
    private_emulator: Emulator, tiny_models_dir: Path, tmp_path: Path
) -> None:
    emulator = private_emulator
    client = SegmentsClient(emulator.api_key, api_url=emulator.url)
    categories = {"format_version": "0.1", "categories": [dict(c) for c in DEMO_CATEGORIES]}
    dataset = client.add_dataset("demo", task_attributes=categories).full_name
    image = client.upload_asset(io.BytesIO(png_bytes(32, 24, seed=0)), "image.png").url
    secret = new_secret()
    process = start_serve(tmp_path, emulator, tiny_models_dir, secret, "--log-format", "json")
    stderr: list[bytes] = []
    reader = threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True)
    reader.start()
    try:
        url = process.stdout.readline().decode().strip()
        assert url.startswith("http://127.0.0.1:"), b"".join(stderr).decode()[-3000:]
        wait_for(lambda: ready(url) == 200, 90, "/readyz (models loaded, API reachable)")
        uuids = [
            client.add_sample(dataset, f"s{i:02d}.png", {"image": {"url": image}}).uuid
            for i in range(BURST)
        ]
        for index, uuid in enumerate(uuids):
            body = sample_created(dataset, uuid)
            answer = requests.post(
                url + "webhooks/segments", data=body, headers=signed(secret, body, f"m{index}")
            )
            assert answer.status_code == 202
        wait_for(lambda: bool(emulator.label_write_counts()), 60, "the first label")
        process.send_signal(signal.SIGTERM)
        wait_for(lambda: ready(url) == 503, 10, "/readyz to say it is stopping")
        late = requests.post(
            url + "webhooks/segments", data=body, headers=signed(secret, body, "m_late")
        )
        assert late.status_code == 503 and late.headers["Retry-After"]
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        reader.join(5)
        process.stdout.close()
        process.stderr.close()
    writes = emulator.label_write_counts()
    assert 0 < len(writes) < BURST, "SIGTERM came too late to be mid-burst"
    assert set(writes.values()) == {1}
    for uuid, _ in writes:
        assert_valid_prelabel(
            client, uuid, image_size=(32, 24), category_ids=[c["id"] for c in DEMO_CATEGORIES]
        )
    state = sqlite3.connect(tmp_path / "state" / "state.sqlite")
    stages = dict(state.execute("SELECT sample_uuid, stage FROM samples").fetchall())
    assert {uuid for uuid, _ in writes} == {u for u, stage in stages.items() if stage == "labeled"}
    assert set(stages.values()) == {"labeled"}, "a sample was left uploaded but not written"
    assert state.execute("SELECT COUNT(*) FROM leases").fetchone() == (0,)
    client.close()
    check_json_log(b"".join(stderr).decode(), [emulator.api_key, secret, secret[6:]], len(writes))


def check_json_log(log: str, secrets_: list[str], labeled: int) -> None:
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert lines, "no log at all"
    for line in lines:
        assert {"time", "level", "dataset", "sample", "outcome", "reason"} <= set(line)
    outcomes = [line for line in lines if line["outcome"] == "labeled"]
    assert len(outcomes) == labeled
    assert all(line["dataset"] == "jane/demo" and line["sample"] for line in outcomes)
    for secret in secrets_:
        assert secret not in log


def ready(url: str) -> int:
    try:
        return requests.get(url + "readyz", timeout=2).status_code
    except requests.ConnectionError:
        return 0


def invoke(tmp_path: Path, emulator: Emulator, secret: str, *extra: str) -> Any:
    secret_file = tmp_path / "secret"
    secret_file.write_text(secret)
    args = [
        "serve",
        "--api-url",
        emulator.url,
        "--state-dir",
        str(tmp_path / "state"),
        "--webhook-secret-file",
        str(secret_file),
        "--port",
        "0",
        *extra,
    ]
    return CliRunner().invoke(main, args, env={"SEGMENTS_API_KEY": EMULATOR_API_KEY})


@pytest.mark.parametrize(
    ("secret", "message"),
    [("", "is empty"), ("not-a-secret!", "not a Svix signing secret")],
)
def test_an_unusable_secret_is_a_usage_error(
    emulator: Emulator, tmp_path: Path, secret: str, message: str
) -> None:
    result = invoke(tmp_path, emulator, secret, "--dataset", "jane/demo")
    assert result.exit_code == 2 and message in result.output


def test_a_dataset_that_does_not_exist_is_a_usage_error(emulator: Emulator, tmp_path: Path) -> None:
    result = invoke(tmp_path, emulator, new_secret(), "--dataset", "jane/missing")
    assert result.exit_code == 2 and "jane/missing not found" in result.output


def test_a_busy_port_is_a_usage_error(emulator: Emulator, tmp_path: Path) -> None:
    result = invoke(
        tmp_path, emulator, new_secret(), "--dataset", "jane/demo", "--port", str(emulator.port)
    )
    assert result.exit_code == 2 and "cannot listen" in result.output


@pytest.mark.parametrize("command", [["run"], ["sync", "--once"]])
def test_run_and_sync_log_json_lines_without_the_key(
    private_emulator: Emulator, tmp_path: Path, command: list[str]
) -> None:
    """A sample whose image cannot be fetched fails and is logged; no model is ever loaded."""
    emulator = private_emulator
    emulator.create_dataset("jane/broken", categories=[dict(c) for c in DEMO_CATEGORIES])
    emulator.add_image_sample("jane/broken", "gone.png", "http://127.0.0.1:9/gone.png")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "prelabel",
            *command,
            "--dataset",
            "jane/broken",
            "--api-url",
            emulator.url,
            "--config",
            str(write_config(tmp_path / "config.yaml")),
            "--state-dir",
            str(tmp_path / "state"),
            "--output-dir",
            str(tmp_path / "out"),
            "-q",
            "--log-format",
            "json",
        ],
        cwd=REPO,
        env={**os.environ, "SEGMENTS_API_KEY": emulator.api_key},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    log_lines = [line for line in result.stderr.splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in log_lines]
    assert any(r["level"] == "ERROR" and "gone.png" in r["message"] for r in records)
    assert all(
        {"time", "level", "dataset", "sample", "outcome", "reason"} <= set(r) for r in records
    )
    assert emulator.api_key not in result.stderr + result.stdout
