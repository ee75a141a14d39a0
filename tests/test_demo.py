"""``prelabel demo``: one command, no account, no weights; then the emulator for the notebook.

The first test runs the command in process, as a new user would with no options, and checks
what it leaves in the folder and what it says. The second runs it as a real process with
``--keep-serving`` and reads the dataset back through the real SDK while it serves, using the
environment it printed: what the notebook will do.
"""

from __future__ import annotations

import json
import queue
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import requests
from click.testing import CliRunner
from PIL import Image
from segments import SegmentsClient

from prelabel.cli import main
from prelabel.config import load_settings
from prelabel.demo import DEMO_IMAGES, DEMO_LABELED, demo_settings

REPO = Path(__file__).resolve().parents[1]
SAMPLES = DEMO_IMAGES + DEMO_LABELED


def test_demo_runs_the_main_job_and_says_what_to_look_at(tmp_path: Path) -> None:
    out = tmp_path / "prelabel-demo"

    result = CliRunner().invoke(main, ["demo", "--out", str(out), "-q"])

    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"] == "jane/demo" and report["dry_run"] is False
    assert [s["result"] for s in report["samples"]] == ["labeled"] * DEMO_IMAGES
    assert all(s["segments"] > 0 for s in report["samples"])  # the tiny thresholds find things
    overlays = sorted((out / "overlays").glob("*.png"))
    assert [p.name for p in overlays] == [f"street-{i:02d}.png" for i in range(SAMPLES)]
    with Image.open(overlays[0]) as first, Image.open(out / "images" / "street-00.png") as image:
        assert first.width == image.width and first.height > image.height  # with a legend
    assert (out / "tiny-models" / "sam").is_dir()
    assert load_settings(out / "config.yaml") == demo_settings(tiny=True)
    for what in ("overlays", "report.json", "config.yaml", "--keep-serving", "--models DIR"):
        assert what in result.output, what
    assert f"{DEMO_IMAGES} of {SAMPLES} samples pre-labeled" in result.output
    assert "tiny random-weight" in result.output


def test_keep_serving_prints_the_environment_and_serves_until_interrupted(
    tmp_path: Path, tiny_models_dir: Path
) -> None:
    out = tmp_path / "demo"
    command = ["demo", "--out", str(out), "-q", "--models", str(tiny_models_dir), "--keep-serving"]
    process = subprocess.Popen(
        [sys.executable, "-m", "prelabel", *command],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        env = _exports(process, timeout=120)
        assert set(env) == {
            "PRELABEL_DATASET",
            "PRELABEL_API_URL",
            "SEGMENTS_API_KEY",
            "PRELABEL_MODELS",
            "PRELABEL_CONFIG",
        }
        assert Path(env["PRELABEL_MODELS"]) == tiny_models_dir.resolve()
        assert not (out / "tiny-models").exists()  # --models given: none were made
        assert load_settings(Path(env["PRELABEL_CONFIG"])) == demo_settings(tiny=True)
        client = SegmentsClient(env["SEGMENTS_API_KEY"], api_url=env["PRELABEL_API_URL"])
        try:
            samples = client.get_samples(env["PRELABEL_DATASET"])
            labels = [client.get_label(s.uuid, labelset="ground-truth") for s in samples]
            statuses = [str(getattr(x.label_status, "value", x.label_status)) for x in labels]
        finally:
            client.close()
        assert sorted(statuses) == ["LABELED"] * DEMO_LABELED + ["PRELABELED"] * DEMO_IMAGES

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        try:
            requests.get(env["PRELABEL_API_URL"], timeout=2)
        except requests.ConnectionError:
            pass
        else:
            raise AssertionError("the emulator still answers after the demo exited")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()


def _exports(process: subprocess.Popen[str], timeout: float) -> dict[str, str]:
    """The ``export NAME=VALUE`` lines, read until the last one, without blocking forever."""
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout

    def read() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    env: dict[str, str] = {}
    while "PRELABEL_CONFIG" not in env:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"prelabel demo printed no environment; got {env}") from None
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").strip().partition("=")
            env[name] = shlex.split(value)[0]
    return env
