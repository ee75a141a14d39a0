"""Ctrl-C and SIGTERM in ``prelabel run`` (issue 21): real processes, real signals.

One signal lets the samples in flight finish, records them, prints the summary and "interrupted:
rerun the same command to finish the remaining N", and exits 130; a second Ctrl-C ends the
process at once, with no label half-written. Either way the same command finishes the rest,
writing each label once. The run is held mid-dataset by a slow image download (emulator fault).
On Ray (``--engine ray``) the run is a second driver on the tests' Ray instance
(``tests/fixtures/ray_cluster.py``); what it finishes is the batch in flight.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from segments import SegmentsClient

from prelabel.emulator import Emulator, FaultRule
from prelabel.run.sync import EXIT_INTERRUPTED
from tests.connector_helpers import read_report, url_path, write_config
from tests.fixtures.emulator import EMULATOR_API_KEY, seed_dataset_via_sdk
from tests.fixtures.processes import RunCommand
from tests.fixtures.ray_cluster import RAY_MARKS

GT = "ground-truth"
N = 6


def _start_held_at_third_sample(
    emulator: Emulator,
    segments_client: SegmentsClient,
    tmp_path: Path,
    models: Path,
    *,
    name: str,
    hold_s: float,
    engine: str = "sequential",
) -> tuple[subprocess.Popen[bytes], RunCommand, list[str]]:
    """A run whose third sample's image download takes ``hold_s``; returns once the first two
    labels are written and the run has asked the server about the third sample (it is then past
    the engine's stop check for it, whatever the machine's load)."""
    seeded = seed_dataset_via_sdk(segments_client, name=name, n_images=N)
    third = segments_client.get_sample(seeded.sample_uuids[2]).attributes.image.url
    emulator.set_faults([FaultRule(path=url_path(third), method="GET", latency_s=hold_s, times=1)])
    config = write_config(tmp_path / "config.yaml")
    config.write_text(config.read_text() + f"worker:\n  engine: {engine}\n", encoding="utf-8")
    command = RunCommand(
        api_url=emulator.url,
        dataset=seeded.full_name,
        models=models,
        state_dir=tmp_path / "state",
        config=config,
        key=EMULATOR_API_KEY,
    )
    # Only the run's own requests count: the test's ``get_sample`` above names the third
    # sample too, and counting it let the signal come before the run reached that sample.
    before = len(emulator.requests)
    process = command.start(tmp_path / "run1", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    third_uuid = seeded.sample_uuids[2]
    while len(emulator.label_write_counts()) < 2 or not any(
        third_uuid in record.path for record in emulator.requests[before:]
    ):
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert time.monotonic() < deadline, "the run never reached its third sample"
        time.sleep(0.05)
    return process, command, list(seeded.sample_uuids)


def _rerun_finishes_the_rest_writing_each_label_once(
    emulator: Emulator, command: RunCommand, uuids: list[str]
) -> None:
    emulator.clear_faults()
    rerun = command.run(command.state_dir.parent / "run1-rerun", timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()[-3000:]
    assert emulator.label_write_counts() == {(u, GT): 1 for u in uuids}
    report = read_report(command.state_dir.parent / "run1-rerun" / "report.json")
    assert (report["interrupted"], report["remaining"]) == (False, None)


@pytest.mark.parametrize(
    ("sig", "engine"),
    [
        (signal.SIGINT, "sequential"),
        pytest.param(signal.SIGTERM, "sequential", marks=pytest.mark.slow),
        pytest.param(signal.SIGINT, "overlapped", marks=pytest.mark.slow),
    ],
    ids=["sigint-sequential", "sigterm-sequential", "sigint-overlapped"],
)
def test_a_signal_finishes_the_samples_in_flight_reports_and_exits_130(
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models_dir: Path,
    tmp_path: Path,
    sig: signal.Signals,
    engine: str,
) -> None:
    process, command, uuids = _start_held_at_third_sample(
        emulator,
        segments_client,
        tmp_path,
        tiny_models_dir,
        name=f"stop-{sig.name.lower()}-{engine}",
        hold_s=3.0,
        engine=engine,
    )

    process.send_signal(sig)
    _, stderr_bytes = process.communicate(timeout=120)
    stderr = stderr_bytes.decode()

    assert process.returncode == EXIT_INTERRUPTED, stderr[-3000:]
    written = emulator.label_write_counts()
    assert all(count == 1 for count in written.values())
    report = read_report(tmp_path / "run1" / "report.json")
    labeled = [s["sample_uuid"] for s in report["samples"] if s["result"] == "labeled"]
    assert sorted(labeled) == sorted(u for u, _ in written)
    assert (report["interrupted"], report["remaining"]) == (True, N - len(labeled))
    if engine == "sequential":
        # The sample in flight (the third, its download held) was finished, then the run
        # stopped: nothing after it started.
        outcomes = {s["sample_uuid"]: s["result"] for s in report["samples"]}
        assert sorted(labeled) == sorted(uuids[:3]), (outcomes, stderr[-3000:])
    assert "labeled" in stderr  # the summary
    assert f"interrupted: rerun the same command to finish the remaining {N - len(labeled)}" in (
        stderr
    )
    assert "Traceback" not in stderr and "Aborted!" not in stderr
    _rerun_finishes_the_rest_writing_each_label_once(emulator, command, uuids)


def test_a_second_ctrl_c_stops_at_once_without_a_half_written_label(
    emulator: Emulator, segments_client: SegmentsClient, tiny_models_dir: Path, tmp_path: Path
) -> None:
    process, command, uuids = _start_held_at_third_sample(
        emulator, segments_client, tmp_path, tiny_models_dir, name="stop-twice", hold_s=20.0
    )

    process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    start = time.monotonic()
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=30)

    assert process.returncode == EXIT_INTERRUPTED
    assert time.monotonic() - start < 10, "the second Ctrl-C waited for the held download"
    assert emulator.label_write_counts() == {(u, GT): 1 for u in uuids[:2]}
    _rerun_finishes_the_rest_writing_each_label_once(emulator, command, uuids)


# On Ray ----------------------------------------------------------------------------------------


def _start_ray_run_held_at_third_image(
    emulator: Emulator,
    segments_client: SegmentsClient,
    tmp_path: Path,
    models: Path,
    ray_address: str,
    *,
    name: str,
    hold_s: float,
) -> tuple[subprocess.Popen[bytes], RunCommand, list[str]]:
    """``prelabel run --engine ray`` on the tests' Ray instance (a second driver on it), its
    third image's download taking ``hold_s``; returns once a prediction actor has asked for
    that image (the run is then mid-dataset, its pools up and a batch in flight)."""
    seeded = seed_dataset_via_sdk(segments_client, name=name, n_images=N)
    third = url_path(segments_client.get_sample(seeded.sample_uuids[2]).attributes.image.url)
    emulator.set_faults([FaultRule(path=third, method="GET", latency_s=hold_s, times=1)])
    command = RunCommand(
        api_url=emulator.url,
        dataset=seeded.full_name,
        models=models,
        state_dir=tmp_path / "state",
        config=write_config(tmp_path / "config.yaml"),
        key=EMULATOR_API_KEY,
        # One prediction actor at a whole CPU and two upload actors fit the instance's 2 CPUs.
        extra=("--engine", "ray", "--ray-address", ray_address, "--workers", "1"),
    )
    process = command.start(tmp_path / "run1", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not any(record.path == third for record in emulator.requests):
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert time.monotonic() < deadline, "the run never asked for its third image"
        time.sleep(0.05)
    return process, command, list(seeded.sample_uuids)


@pytest.fixture
def ray_address(pid_dir: Path) -> str:
    """The address of the tests' Ray instance (``tests/fixtures/ray_cluster.py``)."""
    import ray

    address: str = ray.get_runtime_context().gcs_address
    return address


@pytest.mark.slow
@RAY_MARKS[0]
@RAY_MARKS[1]
def test_sigterm_stops_a_ray_run_cleanly_and_a_rerun_finishes_it(
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models_dir: Path,
    tmp_path: Path,
    ray_address: str,
) -> None:
    """SIGTERM, the signal Ray's own init takes over (SIGINT goes the same way once it is
    ours: the local engines' tests above)."""
    sig = signal.SIGTERM
    process, command, uuids = _start_ray_run_held_at_third_image(
        emulator,
        segments_client,
        tmp_path,
        tiny_models_dir,
        ray_address,
        name=f"stop-ray-{sig.name.lower()}",
        hold_s=3.0,
    )

    process.send_signal(sig)
    _, stderr_bytes = process.communicate(timeout=120)
    stderr = stderr_bytes.decode()

    # Ray's init installs its own SIGTERM handler (sys.exit(15), exit code 15, a stack dump);
    # the run keeps ours.
    assert process.returncode == EXIT_INTERRUPTED, stderr[-3000:]
    written = emulator.label_write_counts()
    assert all(count == 1 for count in written.values())
    report = read_report(tmp_path / "run1" / "report.json")
    labeled = [s["sample_uuid"] for s in report["samples"] if s["result"] == "labeled"]
    assert sorted(labeled) == sorted(u for u, _ in written)
    assert (report["interrupted"], report["remaining"]) == (True, N - len(labeled))
    assert len(labeled) < N
    assert f"interrupted: rerun the same command to finish the remaining {N - len(labeled)}" in (
        stderr
    )
    assert "Traceback" not in stderr and "Aborted!" not in stderr
    _rerun_finishes_the_rest_writing_each_label_once(emulator, command, uuids)


@pytest.mark.slow
@RAY_MARKS[0]
@RAY_MARKS[1]
def test_a_second_ctrl_c_stops_a_ray_run_at_once_without_a_half_written_label(
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models_dir: Path,
    tmp_path: Path,
    ray_address: str,
) -> None:
    process, command, uuids = _start_ray_run_held_at_third_image(
        emulator,
        segments_client,
        tmp_path,
        tiny_models_dir,
        ray_address,
        name="stop-ray-twice",
        hold_s=20.0,
    )

    process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    start = time.monotonic()
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=30)

    assert process.returncode == EXIT_INTERRUPTED
    assert time.monotonic() - start < 10, "the second Ctrl-C waited for the held download"
    assert all(count == 1 for count in emulator.label_write_counts().values())
    _rerun_finishes_the_rest_writing_each_label_once(emulator, command, uuids)
