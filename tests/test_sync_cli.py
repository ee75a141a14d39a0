"""``prelabel sync`` as a real process (``python -m prelabel``) against the in-test emulator.

The worker runs with the tiny models; the test adds samples, injects faults and sends signals
while it runs, and judges by what the emulator holds (labels, write and upload counts), the exit
code and the state file, never by log text. Timing points are pinned with the emulator: a label
write made slow by a latency rule is in flight when SIGTERM arrives. The --overwrite-prelabels
test runs the command in process (through click), which spares a model-loading process.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from segments import SegmentsClient

from prelabel.cli import main
from prelabel.emulator import Emulator, FaultRule
from prelabel.state import LABELED, UPLOADED, SampleRecord, StateStore
from tests.connector_helpers import (
    assert_valid_prelabel,
    human_attributes,
    requests_matching,
    write_config,
)
from tests.fixtures.emulator import (
    DEMO_CATEGORIES,
    EMULATOR_API_KEY,
    png_bytes,
    seed_dataset_via_sdk,
)

REPO = Path(__file__).resolve().parents[1]
GT = "ground-truth"
CATEGORY_IDS = [c["id"] for c in DEMO_CATEGORIES]

pytestmark = pytest.mark.slow


class Workers:
    """Starts ``prelabel sync`` processes sharing one --state-dir; kills leftovers at the end."""

    def __init__(self, tmp_path: Path, emulator: Emulator, models: Path) -> None:
        self.tmp_path = tmp_path
        self.emulator = emulator
        self.models = models
        self.state_dir = tmp_path / "state"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}

    def start(
        self,
        dataset: str,
        *extra: str,
        config: Path,
        name: str,
        key: str = EMULATOR_API_KEY,
    ) -> subprocess.Popen[bytes]:
        out = self.tmp_path / name
        out.mkdir()
        command = [
            sys.executable,
            "-m",
            "prelabel",
            "-v",
            "sync",
            "--dataset",
            dataset,
            "--api-url",
            self.emulator.url,
            "--models",
            str(self.models),
            "--state-dir",
            str(self.state_dir),
            "--config",
            str(config),
            "--output-dir",
            str(out),
            "-q",
            *extra,
        ]
        env = {**os.environ, "SEGMENTS_API_KEY": key}
        with (out / "stderr.txt").open("wb") as stderr:
            process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr
            )
        self.processes.append(process)
        self.logs[process.pid] = out / "stderr.txt"
        return process

    def stderr(self, process: subprocess.Popen[bytes]) -> str:
        return self.logs[process.pid].read_text(errors="replace")[-4000:]

    def until(
        self,
        condition: Callable[[], bool],
        what: str,
        *,
        alive: Iterable[subprocess.Popen[bytes]] = (),
        timeout: float = 90,
    ) -> None:
        """Poll ``condition``; fail when a process in ``alive`` exits first, or on timeout."""
        deadline = time.monotonic() + timeout
        while not condition():
            for process in alive:
                if process.poll() is not None:
                    raise AssertionError(
                        f"worker exited ({process.returncode}) before {what}:\n"
                        + self.stderr(process)
                    )
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.02)

    def wait(self, process: subprocess.Popen[bytes], timeout: float = 120) -> int:
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError(
                f"worker still running after {timeout} s:\n{self.stderr(process)}"
            ) from None

    def terminate(self, process: subprocess.Popen[bytes], within: float = 10) -> int:
        """SIGTERM, then the exit code, which must come within ``within`` seconds."""
        assert process.poll() is None, self.stderr(process)
        process.send_signal(signal.SIGTERM)
        return self.wait(process, timeout=within)

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)


@pytest.fixture
def workers(emulator: Emulator, tiny_models_dir: Path, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(tmp_path, emulator, tiny_models_dir)
    yield pool
    pool.close()


def sync_config(tmp_path: Path, *, worker: dict[str, Any] | None = None, **remote: Any) -> Path:
    """The connector tests' config (fast retries, labeling thresholds) plus ``worker`` settings."""
    path = write_config(tmp_path / "config.yaml", **remote)
    if worker:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        data["worker"] = worker
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def state_records(workers: Workers, dataset: str, uuids: Iterable[str]) -> dict[str, Any]:
    store = StateStore.in_dir(workers.state_dir)
    try:
        return {uuid: store.get(dataset, GT, uuid) for uuid in uuids}
    finally:
        store.close()


def assert_no_lease_left(workers: Workers, dataset: str, uuids: Iterable[str]) -> None:
    """Every sample's lease is free: a newcomer can claim it (and gives it back)."""
    store = StateStore.in_dir(workers.state_dir)
    try:
        for uuid in uuids:
            assert store.claim(dataset, GT, uuid, "checker", 60) is None, uuid
            store.release(dataset, GT, uuid, "checker")
    finally:
        store.close()


def dataset_reads(emulator: Emulator, dataset: str) -> int:
    """``GET /datasets/OWNER/NAME/``: one per cycle (each cycle checks the dataset first)."""
    return emulator.request_count("GET", f"/datasets/{dataset}/")


def add_image_samples(emulator: Emulator, dataset: str, names: Iterable[str]) -> list[str]:
    return [
        emulator.add_image_sample(
            dataset, name, emulator.add_asset(png_bytes(32, 24, seed=100 + i), name)
        )
        for i, name in enumerate(names)
    ]


def all_written(emulator: Emulator, uuids: Iterable[str]) -> Callable[[], bool]:
    return lambda: all(emulator.label_write_count(u) >= 1 for u in uuids)


# A failing API, then new samples: later cycles label them; SIGTERM while idle exits 0 ---------


def test_sync_rides_out_a_failing_api_and_labels_new_samples_in_later_cycles(
    emulator: Emulator,
    segments_client: SegmentsClient,
    workers: Workers,
    tmp_path: Path,
) -> None:
    seeded = seed_dataset_via_sdk(segments_client, n_images=2)
    dataset = seeded.full_name
    # Two attempts per request: two 500s fail the first cycle's listing after its retries.
    emulator.set_faults(
        [FaultRule(path="/datasets/*/samples/", error_rate=1.0, error_statuses=(500,), times=2)]
    )
    config = sync_config(tmp_path, retry_attempts=2)
    process = workers.start(dataset, "--interval", "1s", config=config, name="worker")

    def listing_failed() -> bool:
        return len(requests_matching(emulator, "GET", "/datasets/", fault="error")) == 2

    workers.until(listing_failed, "the failing listing", alive=[process])
    assert emulator.label_write_counts() == {}
    # The worker stays up; after the backoff (5 s in SyncPolicy) a later cycle labels.
    workers.until(all_written(emulator, seeded.sample_uuids), "the seeded samples", alive=[process])
    assert dataset_reads(emulator, dataset) >= 2  # the failed cycle, then another

    cycles_before = dataset_reads(emulator, dataset)
    new = add_image_samples(emulator, dataset, ["new_0.png", "new_1.png"])
    workers.until(all_written(emulator, new), "the added samples", alive=[process])
    cycles_after = dataset_reads(emulator, dataset)
    # Let one more (idle) cycle pass: it must write nothing.
    workers.until(
        lambda: dataset_reads(emulator, dataset) > cycles_after, "an idle cycle", alive=[process]
    )

    assert workers.terminate(process, within=10) == 0, workers.stderr(process)
    assert cycles_after > cycles_before  # the new samples came in a later cycle
    uuids = [*seeded.sample_uuids, *new]
    assert emulator.label_write_counts() == {(u, GT): 1 for u in uuids}
    records = state_records(workers, dataset, uuids)
    assert {u: r.stage for u, r in records.items()} == dict.fromkeys(uuids, LABELED)
    for uuid in uuids:
        assert_valid_prelabel(
            segments_client, uuid, image_size=seeded.image_size, category_ids=CATEGORY_IDS
        )
    assert_no_lease_left(workers, dataset, uuids)


# SIGTERM while a label write is in flight: exit 0, nothing half-done, a rerun finishes --------


def test_sigterm_mid_cycle_finishes_the_write_in_flight_and_leaves_a_consistent_state(
    emulator: Emulator,
    segments_client: SegmentsClient,
    workers: Workers,
    tmp_path: Path,
) -> None:
    seeded = seed_dataset_via_sdk(segments_client, n_images=5)
    dataset, uuids = seeded.full_name, seeded.sample_uuids
    seeded_uploads = emulator.asset_upload_count()
    # One sample at a time through each stage, so the stop lands mid-cycle (the default queues
    # would have every sample of this small dataset in delivery by then).
    config = sync_config(
        tmp_path,
        worker={"fetch_workers": 1, "prefetch": 1, "deliver_workers": 1, "deliver_queue": 1},
    )
    emulator.set_faults([FaultRule(path="/labels/*", method="PUT", latency_s=1.5)])
    process = workers.start(dataset, "--interval", "1h", config=config, name="stopped")

    # The bitmap is recorded as uploaded right before the re-read and the (slow) label PUT.
    def uploaded() -> bool:
        records = state_records(workers, dataset, uuids).values()
        return any(r is not None and r.stage == UPLOADED for r in records)

    workers.until(uploaded, "a bitmap upload", alive=[process])
    pinned = [u for u, r in state_records(workers, dataset, uuids).items() if r is not None]
    time.sleep(0.3)  # its re-read is done; the label PUT is sleeping in the emulator
    assert workers.terminate(process, within=20) == 0, workers.stderr(process)

    records = state_records(workers, dataset, uuids)
    labeled = [u for u in uuids if emulator.get_label(u) is not None]
    untouched = [u for u in uuids if u not in labeled]
    assert set(pinned) <= set(labeled)  # the write in flight was finished, not cut off
    assert untouched, "the stop should land mid-cycle"
    for uuid in labeled:  # written once, and the state says so
        assert emulator.label_write_count(uuid) == 1
        record: SampleRecord | None = records[uuid]
        assert record is not None and record.stage == LABELED
        label = emulator.get_label(uuid)
        assert label is not None and label["label_status"] == "PRELABELED"
        assert label["attributes"]["segmentation_bitmap"]["url"] == record.asset_url
    resumable = []
    for uuid in untouched:  # no write, and any bitmap already uploaded is kept for the rerun
        assert emulator.label_write_count(uuid) == 0
        record = records[uuid]
        assert record is None or (record.stage == UPLOADED and record.asset_url), record
        if record is not None:
            resumable.append(uuid)
    # Every bitmap that reached the server is in a label or recorded for reuse: none orphaned.
    assert emulator.asset_upload_count() - seeded_uploads == len(labeled) + len(resumable)
    assert_no_lease_left(workers, dataset, uuids)

    emulator.clear_faults()
    rerun = workers.start(dataset, "--once", config=config, name="rerun")
    assert workers.wait(rerun) == 0, workers.stderr(rerun)

    assert emulator.label_write_counts() == {(u, GT): 1 for u in uuids}
    assert emulator.asset_upload_count() - seeded_uploads == len(uuids)  # none uploaded twice
    records = state_records(workers, dataset, uuids)
    assert {u: r.stage for u, r in records.items()} == dict.fromkeys(uuids, LABELED)
    for uuid in untouched:
        assert_valid_prelabel(
            segments_client, uuid, image_size=seeded.image_size, category_ids=CATEGORY_IDS
        )


# Two workers on one dataset, labelset and state dir ---------------------------------------------


def test_two_workers_at_once_write_each_sample_exactly_once(
    emulator: Emulator,
    segments_client: SegmentsClient,
    workers: Workers,
    tmp_path: Path,
) -> None:
    seeded = seed_dataset_via_sdk(segments_client, n_images=6)
    dataset, uuids = seeded.full_name, seeded.sample_uuids
    seeded_uploads = emulator.asset_upload_count()
    # Slow label writes keep each worker busy long enough for the other to list the same
    # samples: without the leases, both would re-read "no label" and both would write.
    emulator.set_faults([FaultRule(path="/labels/*", method="PUT", latency_s=0.5)])
    config = sync_config(tmp_path)

    first = workers.start(dataset, "--once", config=config, name="w1")
    second = workers.start(dataset, "--once", config=config, name="w2")
    codes = [workers.wait(first), workers.wait(second)]

    assert codes == [0, 0], workers.stderr(first) + workers.stderr(second)
    assert emulator.label_write_counts() == {(u, GT): 1 for u in uuids}
    assert emulator.asset_upload_count() - seeded_uploads == len(uuids)  # no wasted upload
    records = state_records(workers, dataset, uuids)
    assert {u: r.stage for u, r in records.items()} == dict.fromkeys(uuids, LABELED)
    assert_no_lease_left(workers, dataset, uuids)
    reports = [
        json.loads((tmp_path / name / "report.json").read_text(encoding="utf-8"))["samples"]
        for name in ("w1", "w2")
    ]
    labeled = [{s["sample_uuid"] for s in r if s["result"] == "labeled"} for r in reports]
    assert not labeled[0] & labeled[1] and labeled[0] | labeled[1] == set(uuids)
    # They did overlap: one of them met samples the other was labeling, and left them alone.
    assert sum(len(r) for r in reports) > len(uuids)
    assert {s["result"] for r in reports for s in r} <= {"labeled", "skipped"}


# Exit codes ---------------------------------------------------------------------------------------


def test_once_exits_1_when_a_sample_fails(
    emulator: Emulator, workers: Workers, tmp_path: Path
) -> None:
    emulator.create_dataset("jane/mixed", categories=list(DEMO_CATEGORIES))
    [done] = add_image_samples(emulator, "jane/mixed", ["done.png"])
    emulator.set_label_status(done, GT, "LABELED")
    bad = emulator.add_image_sample(
        "jane/mixed", "bad.png", emulator.add_asset(b"not an image", "bad.png")
    )

    process = workers.start("jane/mixed", "--once", config=sync_config(tmp_path), name="once")

    assert workers.wait(process, timeout=60) == 1, workers.stderr(process)
    assert emulator.label_write_counts() == {}
    assert emulator.get_label(bad) is None
    records = state_records(workers, "jane/mixed", [done, bad])
    assert records[done] is None  # a person's label: never selected
    assert records[bad] is not None and records[bad].stage == "failed"
    assert_no_lease_left(workers, "jane/mixed", [bad])


def test_once_exits_0_when_nothing_needs_a_label(
    emulator: Emulator, workers: Workers, tmp_path: Path
) -> None:
    emulator.create_dataset("jane/done", categories=list(DEMO_CATEGORIES))
    labeled, reviewed = add_image_samples(emulator, "jane/done", ["a.png", "b.png"])
    emulator.set_label_status(labeled, GT, "LABELED")  # a person's work: never selected
    emulator.set_label_status(reviewed, GT, "REVIEWED")

    process = workers.start("jane/done", "--once", config=sync_config(tmp_path), name="once")

    assert workers.wait(process, timeout=60) == 0, workers.stderr(process)
    assert emulator.label_write_counts() == {}


@pytest.mark.parametrize("mode", [["--once"], ["--interval", "1s"]], ids=["once", "forever"])
def test_a_refused_key_exits_2_at_once(
    emulator: Emulator, workers: Workers, tmp_path: Path, mode: list[str]
) -> None:
    emulator.create_dataset("jane/demo", categories=list(DEMO_CATEGORIES))
    add_image_samples(emulator, "jane/demo", ["a.png"])

    process = workers.start(
        "jane/demo", *mode, config=sync_config(tmp_path), name="bad-key", key="sk-wrong-1234"
    )

    assert workers.wait(process, timeout=60) == 2, workers.stderr(process)
    assert emulator.label_write_counts() == {}


def test_a_missing_dataset_ends_a_long_running_sync_with_exit_2(
    emulator: Emulator, workers: Workers, tmp_path: Path
) -> None:
    """A typo in --dataset (or a deleted dataset) will not fix itself: no endless retrying."""
    process = workers.start("jane/nope", "--interval", "1s", config=sync_config(tmp_path), name="x")

    assert workers.wait(process, timeout=30) == 2, workers.stderr(process)
    assert dataset_reads(emulator, "jane/nope") == 1


# --overwrite-prelabels: redone once, not every cycle (in process, for speed) ----------------------


@pytest.fixture
def restored_process_state() -> Iterator[None]:
    """sync installs signal handlers and a redacting log record factory: undo both."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    factory = logging.getLogRecordFactory()
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    logging.setLogRecordFactory(factory)


@pytest.mark.usefixtures("restored_process_state")
def test_overwrite_prelabels_redoes_old_prelabels_once_not_every_cycle(
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models_dir: Path,
    tmp_path: Path,
) -> None:
    seeded = seed_dataset_via_sdk(segments_client, n_images=2)
    old, new = seeded.sample_uuids
    # A pre-label from an earlier model, to be redone; and a new sample.
    attributes = human_attributes(segments_client, seeded.image_size)
    before = emulator.write_label(old, GT, attributes, label_status="PRELABELED")
    assert before is not None
    dataset = seeded.full_name
    args = ["sync", "--dataset", dataset, "--api-url", emulator.url, "--interval", "0.2s"]
    args += ["--overwrite-prelabels", "--models", str(tiny_models_dir), "-q"]
    args += ["--state-dir", str(tmp_path / "state"), "--output-dir", str(tmp_path / "out")]
    args += ["--config", str(sync_config(tmp_path))]
    done = threading.Event()

    def stop_after_idle_cycles() -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not done.is_set():
            if all_written(emulator, [old, new])():
                cycles = dataset_reads(emulator, dataset)
                while dataset_reads(emulator, dataset) < cycles + 3 and time.monotonic() < deadline:
                    time.sleep(0.02)
                break
            time.sleep(0.02)
        if not done.is_set():
            os.kill(os.getpid(), signal.SIGTERM)  # also on timeout: a bug must not hang the test

    # A safety net until sync installs its own handler: the watcher's SIGTERM must never
    # reach pytest's default handler.
    signal.signal(signal.SIGTERM, lambda *_: None)
    watcher = threading.Thread(target=stop_after_idle_cycles)
    watcher.start()
    try:
        result = CliRunner().invoke(main, args, env={"SEGMENTS_API_KEY": EMULATOR_API_KEY})
    finally:
        done.set()
        watcher.join(timeout=120)

    assert result.exit_code == 0, result.output
    assert dataset_reads(emulator, dataset) >= 4  # the redoing cycle and three more
    assert emulator.label_write_counts() == {(old, GT): 1, (new, GT): 1}
    after = emulator.get_label(old)
    assert after is not None and after["label_status"] == "PRELABELED"
    assert after["attributes"] != before["attributes"]  # redone by this worker
