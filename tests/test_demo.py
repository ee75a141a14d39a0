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

import numpy as np
import requests
from click.testing import CliRunner
from PIL import Image
from segments import SegmentsClient

from prelabel.cli import main
from prelabel.config import load_settings
from prelabel.demo import DEMO_IMAGES, DEMO_LABELED, demo_settings, run_demo

REPO = Path(__file__).resolve().parents[1]
SAMPLES = DEMO_IMAGES + DEMO_LABELED


def test_demo_runs_the_main_job_and_says_what_to_look_at(tmp_path: Path) -> None:
    out = tmp_path / "prelabel-demo"

    result = CliRunner().invoke(main, ["demo", "--out", str(out), "-q"])

    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"] == "jane/demo" and report["dry_run"] is False
    results = [s["result"] for s in report["samples"]]
    assert results == ["labeled"] * DEMO_IMAGES + ["skipped"] * DEMO_LABELED  # every sample
    labeled, people = report["samples"][:DEMO_IMAGES], report["samples"][DEMO_IMAGES:]
    assert all(s["segments"] > 0 for s in labeled)  # the tiny thresholds find things
    assert all(s["reason"].startswith("labeled by a person (LABELED)") for s in people)
    assert report["summary"]["counts"] == {"labeled": DEMO_IMAGES, "skipped": DEMO_LABELED}
    assert all(s["seconds"] is not None and s["seconds"] >= 0 for s in labeled)
    overlays = sorted((out / "overlays").glob("*.png"))
    assert [p.name for p in overlays] == [f"street-{i:02d}.png" for i in range(SAMPLES)]
    with Image.open(overlays[0]) as first, Image.open(out / "images" / "street-00.png") as image:
        assert first.width == image.width and first.height > image.height  # with a legend
    assert (out / "tiny-models" / "sam").is_dir()
    assert load_settings(out / "config.yaml") == demo_settings(tiny=True)
    config = (out / "config.yaml").read_text()
    for what in ("suit the tiny random-weight models only", "not from these Hugging Face ids"):
        assert what in config, what
    assert "A category your dataset lacks is an error: delete this section" in config
    for what in ("overlays", "report.json", "config.yaml", "--keep-serving", "--models DIR"):
        assert what in result.output, what
    assert f"{DEMO_IMAGES} of {SAMPLES} samples pre-labeled" in result.output
    assert "tiny random-weight" in result.output
    assert "pip install jupyterlab" in result.output
    # The "Next:" commands work when pasted: the first one's program answers --version.
    next_line = result.output.split("Next:\n", 1)[1].splitlines()[0]
    program = next_line.strip().split(" demo --models DIR")[0]
    shown = subprocess.run(
        ["bash", "-c", f"{program} --version"], cwd=Path.cwd(), capture_output=True, text=True
    )
    assert shown.returncode == 0 and "prelabel" in shown.stdout, (program, shown.stderr)


def test_the_demo_overlays_keep_the_scene_visible_and_tags_apart(
    tmp_path: Path, tiny_models_dir: Path
) -> None:
    """What a reviewer sees: most of each scene shows through, and no name tag covers another.

    A pixel counts as visible where the overlay is within 90 levels of the image in every
    channel: the tint (35%) stays within that, an outline or a tag paints over it.
    """
    result = run_demo(tmp_path / "demo", models_dir=tiny_models_dir)
    try:
        figures = []
        for path in result.overlays:
            with Image.open(tmp_path / "demo" / "images" / path.name) as scene:
                image = np.asarray(scene.convert("RGB"), dtype=np.int16)
            with Image.open(path) as drawn:
                shown = np.asarray(drawn.convert("RGB"), dtype=np.int16)[: image.shape[0]]
            visible = float((np.abs(shown - image).max(axis=-1) <= 90).mean())
            tags = result.tags[path]
            height, width = image.shape[:2]
            for tag in tags:
                x0, y0, x1, y1 = tag.box
                assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, (path.name, tag)
            overlaps = [
                (a.caption, b.caption)
                for i, a in enumerate(tags)
                for b in tags[i + 1 :]
                if a.box[0] < b.box[2] and b.box[0] < a.box[2]
                and a.box[1] < b.box[3] and b.box[1] < a.box[3]
            ]  # fmt: skip
            figures.append((path.name, visible, len(tags), overlaps))
    finally:
        result.stop()
    for name, visible, count, overlaps in figures:
        print(f"{name}: {visible:.1%} of the image visible, {count} tags, overlaps {overlaps}")
    assert len(figures) == SAMPLES
    assert all(count > 0 for _, _, count, _ in figures)  # names are drawn
    assert all(not overlaps for *_, overlaps in figures)
    assert min(visible for _, visible, _, _ in figures) >= 0.85


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
        # The commands read the printed environment: evaluate needs no --dataset or --api-url.
        result_path = tmp_path / "pq.json"
        evaluated = CliRunner().invoke(
            main, ["evaluate", "--limit", "1", "-q", "--out", str(result_path)], env=env
        )
        assert evaluated.exit_code == 0, evaluated.output
        assert json.loads(result_path.read_text())["dataset"] == env["PRELABEL_DATASET"]

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
