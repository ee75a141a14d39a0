"""Ctrl-C and SIGTERM in ``prelabel predict`` (also ``--sequence``) and ``prelabel evaluate
--dataset`` (issue 21).

Both run on the driver ``prelabel run`` uses (:func:`prelabel.run.driver.drive`), so a signal
ends them as it ends a run (``tests/test_run_stop.py``): the sample in flight finishes and is
recorded, no new one starts, the summary is printed with a line saying what is left, and the
exit code is 130. Real processes, real signals; the process is held on its third sample (a
FIFO that is one of predict's image files; a slow image download for evaluate) so that where
the signal lands is known; ``predict --sequence`` (which lists only regular files as frames) is
signalled once its second sequence is written, so the one in flight is the second or the third.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from prelabel.emulator import Emulator, FaultRule
from prelabel.run.sync import EXIT_INTERRUPTED
from tests.connector_helpers import read_report, url_path, write_config
from tests.fixtures.emulator import DEMO_CATEGORIES, EMULATOR_API_KEY, png_bytes
from tests.test_evaluation_run import label_reads, write_human_label
from tests.test_predict_sequences import write_frames

REPO = Path(__file__).resolve().parents[1]
N = 6


def _start(command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "prelabel", *command],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _open_writer_once_read(fifo: Path, process: subprocess.Popen[bytes]) -> int:
    """Open ``fifo`` for writing as soon as the process opens it for reading: it is then on
    that file. (A non-blocking open fails with ENXIO while nobody reads.)"""
    deadline = time.monotonic() + 180
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert time.monotonic() < deadline, "predict never reached its third image"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_predict_finishes_the_image_in_flight_reports_and_exits_130(
    tiny_models_dir: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    images = []
    for index in range(N):
        path = tmp_path / f"p{index}.png"
        if index == 2:
            os.mkfifo(path)
        else:
            path.write_bytes(png_bytes(48, 32, seed=index))
        images.append(path)
    categories = tmp_path / "categories.yaml"
    categories.write_text(json.dumps({"categories": list(DEMO_CATEGORIES)}), encoding="utf-8")
    out = tmp_path / "out"
    process = _start(
        [
            "predict",
            *map(str, images),
            "--categories",
            str(categories),
            "--out",
            str(out),
            "--models",
            str(tiny_models_dir),
            "--config",
            str(write_config(tmp_path / "config.yaml")),
            "-q",
        ]
    )
    writer = _open_writer_once_read(images[2], process)

    process.send_signal(sig)
    time.sleep(0.5)
    os.set_blocking(writer, True)
    os.write(writer, png_bytes(48, 32, seed=2))
    os.close(writer)
    _, stderr_bytes = process.communicate(timeout=120)
    stderr = stderr_bytes.decode()

    assert process.returncode == EXIT_INTERRUPTED, stderr[-3000:]
    report = read_report(out / "report.json")
    done = [s["sample_name"] for s in report["samples"]]
    # The image in flight (the third, read from the FIFO) was finished; none after it started.
    assert done == ["p0", "p1", "p2"]
    assert {s["result"] for s in report["samples"]} == {"predicted"}
    assert (report["interrupted"], report["remaining"]) == (True, N - 3)
    assert sorted(p.stem for p in (out / "bitmaps").iterdir()) == done
    assert sorted(p.stem for p in (out / "overlays").iterdir()) == done
    assert "3 of 3 images pre-labeled" in stderr  # the summary
    assert f"interrupted: {N - 3} images not predicted; rerun the same command" in stderr
    assert "Traceback" not in stderr and "Aborted!" not in stderr


@pytest.mark.slow
def test_predict_sequence_finishes_the_sequence_in_flight_reports_and_exits_130(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    folders = []
    for index in range(N):
        folders.append(tmp_path / f"seq{index}")
        write_frames(folders[-1], [(48, 32)] * 3, seed=index)
    categories = tmp_path / "categories.yaml"
    categories.write_text(json.dumps({"categories": list(DEMO_CATEGORIES)}), encoding="utf-8")
    out = tmp_path / "out"
    process = _start(
        [
            "predict",
            "--sequence",
            *map(str, folders),
            "--categories",
            str(categories),
            "--out",
            str(out),
            "--models",
            str(tiny_models_dir),
            "--config",
            str(write_config(tmp_path / "config.yaml")),
            "-q",
        ]
    )
    deadline = time.monotonic() + 180
    while not (out / "seq1" / "tracks.json").exists():  # the second sequence is written
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert time.monotonic() < deadline, "predict never finished its second sequence"
        time.sleep(0.02)

    process.send_signal(signal.SIGTERM)
    _, stderr_bytes = process.communicate(timeout=120)
    stderr = stderr_bytes.decode()

    assert process.returncode == EXIT_INTERRUPTED, stderr[-3000:]
    report = read_report(out / "report.json")
    done = [s["sample_name"] for s in report["samples"]]
    # The sequence in flight when the signal came (the second, or the third if the second was
    # already recorded) was finished, every frame of it; none after it started.
    assert done in (["seq0", "seq1"], ["seq0", "seq1", "seq2"])
    assert {s["result"] for s in report["samples"]} == {"predicted"}
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == done
    for name in done:
        assert (out / name / "tracks.json").is_file()
        assert len(list((out / name / "bitmaps").iterdir())) == 3
    assert (report["interrupted"], report["remaining"]) == (True, N - len(done))
    assert f"{len(done)} of {len(done)} sequences pre-labeled" in stderr  # the summary
    assert f"interrupted: {N - len(done)} sequences not predicted; rerun the same command" in (
        stderr
    )
    assert "Traceback" not in stderr and "Aborted!" not in stderr


@pytest.mark.slow
def test_evaluate_finishes_the_sample_in_flight_writes_the_scores_and_exits_130(
    emulator: Emulator, tiny_models_dir: Path, tmp_path: Path
) -> None:
    dataset = "jane/eval-stop"
    emulator.create_dataset(dataset, categories=list(DEMO_CATEGORIES))
    uuids, urls = [], []
    for index in range(N):
        image = png_bytes(48, 32, seed=index)
        url = emulator.add_asset(image, f"s{index}.png")
        uuids.append(emulator.add_image_sample(dataset, f"s{index}.png", url))
        urls.append(url)
        write_human_label(emulator, uuids[-1], np.zeros((32, 48), np.uint32), {})
    emulator.set_faults([FaultRule(path=url_path(urls[2]), method="GET", latency_s=3.0, times=1)])
    emulator.clear_requests()
    out = tmp_path / "eval.json"
    process = _start(
        [
            "evaluate",
            "--dataset",
            dataset,
            "--api-url",
            emulator.url,
            "--models",
            str(tiny_models_dir),
            "--config",
            str(write_config(tmp_path / "config.yaml")),
            "--out",
            str(out),
            "-q",
        ],
        env={"SEGMENTS_API_KEY": EMULATOR_API_KEY},
    )
    deadline = time.monotonic() + 180
    while uuids[2] not in label_reads(emulator):  # the third sample is in flight
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert time.monotonic() < deadline, "evaluate never reached its third sample"
        time.sleep(0.05)

    process.send_signal(signal.SIGINT)
    stdout_bytes, stderr_bytes = process.communicate(timeout=120)
    stderr = stderr_bytes.decode()

    assert process.returncode == EXIT_INTERRUPTED, stderr[-3000:]
    assert label_reads(emulator) == uuids[:3]  # none after the one in flight started
    document = json.loads(out.read_text())
    assert document["interrupted"] is True
    assert document["samples"] == {"evaluated": 3, "failed": 0, "not_human_labeled": 0}
    assert "All" in stdout_bytes.decode()  # the table of what was scored
    assert "interrupted: the scores cover the 3 samples evaluated; rerun the same command" in (
        stderr
    )
    assert "Traceback" not in stderr and "Aborted!" not in stderr
    assert {r.method for r in emulator.requests} == {"GET"}
