"""``prelabel emulator`` as a person runs it: a subprocess that prints its URL and serves the SDK.

The subprocess tests go through ``python -m prelabel`` (the real entry point), read the first
stdout line as the base URL, use the real SDK against it, and stop it with a signal, which must
end the process with exit code 0.
"""

from __future__ import annotations

import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from segments import SegmentsClient

from prelabel.cli.emulator import emulator as emulator_command
from tests.fixtures.emulator import png_bytes
from tests.serve_helpers import new_secret

REPO = Path(__file__).resolve().parents[1]
CATEGORIES_YAML = """\
categories:
  - {id: 1, name: person, has_instances: true, color: [220, 20, 60], prompt: "a person",
     box_threshold: 0.35}
  - {id: 2, name: sky, has_instances: false, color: [70, 130, 180], prompt: "the sky"}
  - {id: 3, name: road, has_instances: false, ignore: true}
"""


@dataclass
class RunningCli:
    process: subprocess.Popen[str]
    url: str
    stderr_path: Path


@pytest.fixture
def seed_files(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "images"
    images.mkdir()
    for index in range(3):
        (images / f"photo_{index}.png").write_bytes(png_bytes(16, 12, seed=index))
    (images / "notes.txt").write_text("not an image")
    categories = tmp_path / "taxonomy.yaml"
    categories.write_text(CATEGORIES_YAML)
    return images, categories


def _first_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The first stdout line, without blocking forever if the process never prints it."""
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True)
    reader.start()
    try:
        return lines.get(timeout=timeout).strip()
    except queue.Empty:
        process.kill()
        raise AssertionError("prelabel emulator printed no URL") from None


def _start(tmp_path: Path, *args: str) -> RunningCli:
    stderr_path = tmp_path / f"emulator-{len(list(tmp_path.glob('emulator-*')))}.stderr"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "prelabel", "emulator", "--port", "0", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    return RunningCli(process, _first_line(process, timeout=30), stderr_path)


def _stop(cli: RunningCli, sig: signal.Signals) -> int:
    cli.process.send_signal(sig)
    try:
        return cli.process.wait(timeout=10)
    finally:
        _reap(cli)


def _reap(cli: RunningCli) -> None:
    """Kill the process if it still runs and close its pipe (no leaked file descriptors)."""
    if cli.process.poll() is None:
        cli.process.kill()
        cli.process.wait(timeout=10)
    if cli.process.stdout is not None:
        cli.process.stdout.close()


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[RunningCli]]:
    """Collects started processes and kills any a failing test left running."""
    running: list[RunningCli] = []
    yield running
    for cli in running:
        _reap(cli)


def test_cli_serves_a_seeded_dataset_to_the_sdk_and_exits_cleanly_on_sigterm(
    tmp_path: Path, seed_files: tuple[Path, Path], started: list[RunningCli]
) -> None:
    images, categories = seed_files
    cli = _start(
        tmp_path,
        "--api-key",
        "cli-key",
        "--seed-images",
        str(images),
        "--categories",
        str(categories),
        "--dataset",
        "acme/street",
        "--latency-ms",
        "1",
        "--seed",
        "3",
    )
    started.append(cli)

    client = SegmentsClient("cli-key", api_url=cli.url)
    samples = client.get_samples("acme/street")
    dataset = requests.get(
        cli.url + "datasets/acme/street/", headers={"Authorization": "APIKey cli-key"}
    ).json()
    faults = requests.get(cli.url + "_emulator/faults").json()
    image = requests.get(samples[0].attributes.image.url)

    assert cli.url.startswith("http://127.0.0.1:")
    assert [s.name for s in samples] == ["photo_0.png", "photo_1.png", "photo_2.png"]
    assert image.content == png_bytes(16, 12, seed=0)
    assert dataset["task_attributes"]["categories"] == [
        {"id": 1, "name": "person", "has_instances": True, "color": [220, 20, 60]},
        {"id": 2, "name": "sky", "has_instances": False, "color": [70, 130, 180]},
        {"id": 3, "name": "road", "has_instances": False},
    ]
    assert faults["seed"] == 3
    assert faults["rules"][0]["latency_s"] == pytest.approx(0.001)
    assert _stop(cli, signal.SIGTERM) == 0
    assert "cli-key" not in cli.stderr_path.read_text()


def test_cli_db_keeps_state_across_restarts_and_sigint_exits_cleanly(
    tmp_path: Path, seed_files: tuple[Path, Path], started: list[RunningCli]
) -> None:
    images, categories = seed_files
    db = tmp_path / "state.sqlite"
    seed_args = ["--seed-images", str(images), "--categories", str(categories)]
    first = _start(tmp_path, "--db", str(db), *seed_args, "--dataset", "jane/demo")
    started.append(first)
    client = SegmentsClient("emulator-key", api_url=first.url)
    uuid = client.get_samples("jane/demo")[0].uuid
    client.update_sample(uuid, metadata={"checked": True})
    assert _stop(first, signal.SIGINT) == 0

    second = _start(tmp_path, "--db", str(db), *seed_args, "--dataset", "jane/demo")
    started.append(second)
    samples = SegmentsClient("emulator-key", api_url=second.url).get_samples("jane/demo")

    assert len(samples) == 3  # not seeded twice
    assert samples[0].metadata == {"checked": True}
    assert "already exists" in second.stderr_path.read_text()
    assert _stop(second, signal.SIGTERM) == 0


def test_cli_help_has_an_example() -> None:
    result = CliRunner().invoke(emulator_command, ["--help"])

    assert result.exit_code == 0, result.output
    assert "Example:" in result.output
    assert "--seed-images" in result.output


def test_cli_rejects_partial_seed_options(tmp_path: Path) -> None:
    result = CliRunner().invoke(emulator_command, ["--seed-images", str(tmp_path)])

    assert result.exit_code == 2
    assert "go together" in result.output


def test_cli_rejects_a_folder_without_images(tmp_path: Path, seed_files: tuple[Path, Path]) -> None:
    _, categories = seed_files
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["--seed-images", str(empty), "--categories", str(categories), "--dataset", "j/d"]

    result = CliRunner().invoke(emulator_command, args)

    assert result.exit_code == 2
    assert "contains no images" in result.output


def test_importing_the_cli_does_not_import_the_emulator() -> None:
    """The command imports the emulator lazily, so `prelabel --help` stays light."""
    code = "import sys, prelabel.cli; print('prelabel.emulator' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_sigterm_ends_the_emulator_at_once_while_a_webhook_waits_on_a_silent_receiver(
    tmp_path: Path, seed_files: tuple[Path, Path], started: list[RunningCli]
) -> None:
    """A receiver that takes the connection and never answers (hung, or gone behind a proxy)
    holds a webhook POST for its whole timeout (15 s); SIGTERM must not wait for it."""
    images, categories = seed_files
    secret = tmp_path / "secret"
    secret.write_text(new_secret())
    with socket.create_server(("127.0.0.1", 0)) as receiver:  # listens, never accepts
        cli = _start(
            tmp_path,
            "--api-key",
            "cli-key",
            "--seed-images",
            str(images),
            "--categories",
            str(categories),
            "--dataset",
            "acme/street",
            "--webhook-url",
            f"http://127.0.0.1:{receiver.getsockname()[1]}/hooks",
            "--webhook-secret-file",
            str(secret),
        )
        started.append(cli)
        client = SegmentsClient("cli-key", api_url=cli.url)
        url = client.get_samples("acme/street")[0].attributes.image.url
        client.add_sample("acme/street", "extra.png", {"image": {"url": url}})
        # A connection waiting in the backlog: a POST is in flight.
        readable, _, _ = select.select([receiver], [], [], 10)
        assert readable, "the emulator sent no webhook"

        start = time.monotonic()
        assert _stop(cli, signal.SIGTERM) == 0
        # About 1 s here (0.5 s of it the grace webhooks in flight get); the bound leaves room
        # for a loaded machine and still fails a stop that waits for the POST's 15 s.
        assert time.monotonic() - start < 5, "SIGTERM waited for the webhook's timeout"
