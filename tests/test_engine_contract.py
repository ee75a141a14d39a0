"""What every engine promises, tried on each: sequential, overlapped and Ray.

An engine only schedules the one per-sample lifecycle (:mod:`prelabel.run.lifecycle`), so these
must hold alike on each, seen from outside, through ``prelabel run`` (in process, through click)
or, where the test must stop the driver at a chosen point, through ``run_dataset`` and
``run_on_ray``:

- every sample is labeled once, and a rerun has nothing to do;
- three samples in a row failing on server trouble stop the run with exit code 2 and one line;
- an unexpected exception in any step fails that one sample and the run goes on;
- a label a person saved, before the run or during it, is left alone;
- a run whose driver dies mid-way resumes: each label is written once over both runs.

The local engines are chosen with ``worker.engine`` in the config, Ray with ``--engine ray``
(on the one local Ray instance of ``tests/fixtures/ray_cluster.py``). Engine-specific
behaviour stays with its engine: ``tests/test_ray_engine.py`` (actors killed, retried
deliveries, the upload recorded before the label write, dry runs), ``tests/test_overlap.py``
(prefetch, completion order, abandoned samples), ``tests/test_worker.py``, and
``tests/test_resume_kill.py`` (``kill -9`` of a real process at chosen points).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from segments import SegmentsClient

from prelabel.cli import main
from prelabel.config import WorkerSettings
from prelabel.emulator import Emulator, FaultRule
from prelabel.run.job import RunOptions
from prelabel.state import LABELED, SKIPPED, StateStore
from tests.connector_helpers import (
    FAST_REMOTE,
    assert_valid_prelabel,
    human_attributes,
    make_settings,
    outcomes_by_uuid,
    read_report,
    requests_matching,
    state_stage,
    wait_for,
    write_config,
)
from tests.fixtures.emulator import (
    DEMO_CATEGORIES,
    EMULATOR_API_KEY,
    SeededDataset,
    seed_dataset_via_sdk,
)
from tests.fixtures.ray_cluster import (
    ONE_ACTOR,
    RAY_MARKS,
    clear,
    pids,
    ray_options,
    run_ray,
    size_cli_actors,
)
from tests.step_faults import (
    FAULTS_ENV,
    STEPS,
    assert_only_broken_samples_failed,
    install,
    one_sample_per_step,
)

ENGINES = ["sequential", "overlapped", pytest.param("ray", marks=RAY_MARKS)]
CATEGORY_IDS = [c["id"] for c in DEMO_CATEGORIES]
GT = "ground-truth"
#: The local engines' pools: small, so a stop is seen after few samples.
LOCAL_WORKER = {"fetch_workers": 2, "prefetch": 2, "deliver_workers": 2, "deliver_queue": 2}


@pytest.fixture(autouse=True)
def _restore_log_record_factory() -> Iterator[None]:
    """``run`` installs a redacting record factory process-wide; undo it after each test."""
    factory = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(factory)


def ray_pids(request: pytest.FixtureRequest, engine: str) -> Path | None:
    """For Ray, the shared instance's PID folder, emptied; None for a local engine."""
    if engine != "ray":
        return None
    folder: Path = request.getfixturevalue("pid_dir")
    clear(folder)
    return folder


def run_cli(
    engine: str,
    tmp_path: Path,
    emulator: Emulator,
    dataset: str,
    models: Path,
    *,
    out: str = "out",
    workers: int = 1,
) -> Result:
    """``prelabel run`` on ``engine``; the state in ``tmp_path/state``, the report in
    ``tmp_path/<out>``."""
    config = write_config(tmp_path / "config.yaml")
    if engine != "ray":
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
        data["worker"] = {"engine": engine, **LOCAL_WORKER}
        config.write_text(yaml.safe_dump(data), encoding="utf-8")
    args = ["run", "--dataset", dataset, "--api-url", emulator.url, "-q"]
    args += ["--state-dir", str(tmp_path / "state"), "--out", str(tmp_path / out)]
    args += ["--config", str(config), "--models", str(models)]
    if engine == "ray":
        args += ["--engine", "ray", "--workers", str(workers)]
    return CliRunner().invoke(main, args, env={"SEGMENTS_API_KEY": EMULATOR_API_KEY})


def assert_labeled_once(
    emulator: Emulator, client: SegmentsClient, seeded: SeededDataset, uuids: Any = None
) -> None:
    """Each sample (of ``uuids``, default all) has one label write and a valid pre-label."""
    for uuid in seeded.sample_uuids if uuids is None else uuids:
        assert emulator.label_write_count(uuid) == 1, uuid
        assert_valid_prelabel(client, uuid, image_size=seeded.image_size, category_ids=CATEGORY_IDS)


# Labels each sample once -------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_every_sample_is_labeled_once_and_a_rerun_has_nothing_to_do(
    engine: str,
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models_dir: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seeded = seed_dataset_via_sdk(segments_client, name=f"once-{engine}", n_images=8)
    pid_dir = ray_pids(request, engine)
    size_cli_actors(monkeypatch)

    result = run_cli(engine, tmp_path, emulator, seeded.full_name, tiny_models_dir, workers=2)

    assert result.exit_code == 0, (result.output, result.exception)
    out = tmp_path / "out"
    report = read_report(out / "report.json")
    if engine == "ray":
        assert report["engine"] == "ray"
    assert report["summary"]["counts"] == {"labeled": 8}
    outcomes = outcomes_by_uuid(report)
    assert set(outcomes) == set(seeded.sample_uuids)  # in the order they finished
    assert_labeled_once(emulator, segments_client, seeded)
    for uuid in seeded.sample_uuids:
        label = segments_client.get_label(uuid)
        assert outcomes[uuid]["result"] == "labeled"
        assert outcomes[uuid]["segments"] == len(label.attributes.model_dump()["annotations"])
        assert outcomes[uuid]["score"] == pytest.approx(label.score)
        assert state_stage(tmp_path, seeded.full_name, uuid) == LABELED
    assert f"report: {out / 'report.json'}" in result.stderr
    assert re.search(r"labeled\s+8", result.stderr), result.stderr
    if pid_dir is not None:
        # Two prediction actors (one model copy each), none of them this process; two upload
        # actors.
        predict = pids(pid_dir, "predict")
        assert len(predict) == 2 and os.getpid() not in predict
        assert len(pids(pid_dir, "deliver")) == 2
        clear(pid_dir)
    uploads = emulator.asset_upload_count()

    again = run_cli(
        engine, tmp_path, emulator, seeded.full_name, tiny_models_dir, out="out2", workers=2
    )

    assert again.exit_code == 0, (again.output, again.exception)
    assert "nothing to do" in again.stderr
    assert read_report(tmp_path / "out2" / "report.json")["samples"] == []
    if pid_dir is not None:
        assert pids(pid_dir, "predict") == set()  # no actor was even started
    assert emulator.asset_upload_count() == uploads
    assert_labeled_once(emulator, segments_client, seeded)


# Stops on server trouble -------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_three_samples_in_a_row_failing_on_server_trouble_stop_the_run_with_exit_2(
    engine: str,
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models_dir: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seeded = seed_dataset_via_sdk(segments_client, name=f"down-{engine}", n_images=12)
    ray_pids(request, engine)
    size_cli_actors(monkeypatch)
    emulator.clear_requests()
    emulator.set_faults(
        [FaultRule(path="/assets/*", method="POST", error_rate=1.0, error_statuses=(503,))]
    )

    result = run_cli(engine, tmp_path, emulator, seeded.full_name, tiny_models_dir)

    uploads = [r for r in emulator.requests if r.path.startswith("/assets") and r.fault]
    emulator.clear_faults()
    assert result.exit_code == 2, (result.output, result.exception)
    [error] = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert error.startswith("Error: stopping: 3 samples in a row failed to reach the server")
    assert error.endswith("rerun to resume")
    assert "Traceback" not in result.output
    assert requests_matching(emulator, "PUT", "/labels/") == []
    failed = list(read_report(tmp_path / "out" / "report.json")["samples"])
    assert 3 <= len(failed) < 12 and all(o["transient"] for o in failed)
    if engine != "ray":
        # The stop came after three samples (plus those already handed to delivery), not
        # after the whole dataset.
        attempts = FAST_REMOTE["retry_attempts"]
        bound = attempts * (3 + WorkerSettings(**LOCAL_WORKER).deliver_queue)
        assert len(uploads) <= bound < attempts * 12


# A step's unexpected exception fails one sample --------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_an_unexpected_exception_in_any_step_fails_only_its_sample(
    engine: str,
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models_dir: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On Ray, the same run shows that with ``batch_size`` above one the actor predicts in
    ``predict_batch`` calls of up to that many. Eight samples, batches of four: the first holds
    the check, fetch, encode and deliver samples, the second the infer sample among three good
    ones. That batch's ``predict_batch`` call raises (tests/step_faults.py), so the steps fall
    back to predicting one by one: only the infer sample fails."""
    seeded = seed_dataset_via_sdk(segments_client, name=f"steps-{engine}", n_images=8)
    names = seeded.sample_names
    pid_dir = ray_pids(request, engine)
    if pid_dir is None:
        faults = tmp_path / "faults.json"
        monkeypatch.setenv(FAULTS_ENV, str(faults))
        install(monkeypatch.setattr)
    else:
        files: dict[str, Path] = request.getfixturevalue("worker_files")
        faults = files["faults"]
        files["batches"].unlink(missing_ok=True)
        size_cli_actors(monkeypatch, cpus_per_worker=1.0, batch_size=4, upload_workers=1)
    # check, fetch, infer, encode, deliver: on Ray the infer sample is the second batch's second.
    broken = one_sample_per_step([names[0], names[1], names[5], names[2], names[3]], faults)
    try:
        result = run_cli(engine, tmp_path, emulator, seeded.full_name, tiny_models_dir)
    finally:
        faults.unlink()

    assert result.exit_code == 1, (result.output, result.exception)  # some samples failed
    report = read_report(tmp_path / "out" / "report.json")
    # The run went on to the end.
    assert_only_broken_samples_failed(report["samples"], broken, names)
    assert report["summary"]["counts"] == {"failed": len(STEPS), "labeled": 8 - len(STEPS)}
    for name, uuid in zip(names, seeded.sample_uuids, strict=True):
        if name in broken.values():
            assert emulator.label_write_count(uuid) == 0, name
            assert state_stage(tmp_path, seeded.full_name, uuid) == "failed", name
        else:
            assert_labeled_once(emulator, segments_client, seeded, [uuid])
            assert state_stage(tmp_path, seeded.full_name, uuid) == LABELED, name
    if pid_dir is not None:
        lines = files["batches"].read_text().splitlines()
        sizes = [int(line.split()[0]) for line in lines]
        assert sizes and max(sizes) > 1 and all(size <= 4 for size in sizes), lines
        # The batch with the infer sample raised, then each of its samples was predicted alone.
        assert "4 injected" in lines, lines


# A person's label is left alone ------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_labels_a_person_saved_before_or_during_the_run_are_left_alone(
    engine: str,
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models_dir: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seeded = seed_dataset_via_sdk(segments_client, name=f"people-{engine}", n_images=2)
    ray_pids(request, engine)
    size_cli_actors(monkeypatch, cpus_per_worker=1.0, upload_workers=1)
    before, during = seeded.sample_uuids
    human = human_attributes(segments_client, seeded.image_size)
    emulator.write_label(before, GT, human, label_status="LABELED")
    emulator.clear_requests()  # the seeding's own uploads
    # The bitmap upload is slowed down; meanwhile an annotator saves the only selected sample.
    emulator.set_faults([FaultRule(path="/s3-upload/", method="POST", latency_s=1.5)])

    def annotator() -> None:
        wait_for(lambda: bool(requests_matching(emulator, "POST", "/assets/")), 60, "an upload")
        emulator.write_label(during, GT, human, label_status="LABELED")

    thread = threading.Thread(target=annotator, daemon=True)
    thread.start()
    result = run_cli(engine, tmp_path, emulator, seeded.full_name, tiny_models_dir)
    thread.join(timeout=5)

    assert result.exit_code == 0, (result.output, result.exception)
    for uuid in (before, during):
        label = emulator.get_label(uuid)
        assert label is not None
        assert label["label_status"] == "LABELED"
        assert label["attributes"] == human
        assert emulator.label_write_count(uuid) == 0
    assert requests_matching(emulator, "PUT", "/labels/") == []
    report = read_report(tmp_path / "out" / "report.json")
    outcomes = outcomes_by_uuid(report)
    assert set(outcomes) == {during}  # `before` was never selected
    assert outcomes[during]["result"] == "skipped"
    assert "LABELED" in outcomes[during]["reason"]
    assert report["summary"]["counts"] == {"skipped": 1}
    assert state_stage(tmp_path, seeded.full_name, during) == SKIPPED


# Resume after the driver died --------------------------------------------------------------------


class Stopped(Exception):
    """The driver dies: raised from the progress display, in the loop that records results."""


class CountingProgress:
    """Counts what the run reports; with ``stop_at``, its n-th advance raises :class:`Stopped`."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.stop_at = stop_at
        self.total: int | None = None
        self.advanced = 0
        self.closed = False

    def start(self, total: int | None, description: str) -> None:
        self.total = total

    def advance(self, n: int = 1) -> None:
        self.advanced += n
        if self.advanced == self.stop_at:
            raise Stopped

    def note(self, **fields: object) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def run_engine(
    engine: str,
    request: pytest.FixtureRequest,
    emulator: Emulator,
    tmp_path: Path,
    models: Path,
    dataset: str,
    settings: Any,
    progress: CountingProgress,
    out: str,
) -> dict[str, Any]:
    """One run of ``engine`` with ``progress``, through ``run_on_ray`` or ``run_dataset`` (the
    functions under the CLI); returns its report."""
    if engine == "ray":
        pid_dir: Path = request.getfixturevalue("pid_dir")
        options = ray_options(**ONE_ACTOR)
        run = run_ray(
            emulator, tmp_path, pid_dir, models, dataset, settings=settings, options=options,
            progress=progress, output_dir=out,
        )  # fmt: skip
        return run.report
    from prelabel.run.dataset import run_dataset
    from prelabel.run.models import pipeline_loader

    worker = WorkerSettings(engine=engine, **LOCAL_WORKER)  # type: ignore[arg-type]
    local = settings.model_copy(update={"worker": worker})
    with StateStore.in_dir(tmp_path / "state") as state:
        run_dataset(
            EMULATOR_API_KEY,
            local,
            RunOptions(dataset=dataset, output_dir=tmp_path / out),
            state=state,
            load_pipeline=pipeline_loader(local, models),
            progress=progress,
        )
    return read_report(tmp_path / out / "report.json")


@pytest.mark.parametrize("engine", ENGINES)
def test_under_faults_a_run_whose_driver_died_mid_way_and_its_rerun_label_every_sample_once(
    engine: str,
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models_dir: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    seeded = seed_dataset_via_sdk(segments_client, name=f"faulty-{engine}", n_images=8)
    settings = make_settings(emulator.url, retry_attempts=10, page_size=3)
    emulator.clear_requests()
    emulator.set_faults(
        [
            FaultRule(path="/api_status/"),  # connecting under faults: test_segments_client
            # Certain faults on each stage (the random mix below depends on how the requests
            # interleave): the listing, image downloads, asset creation and label writes.
            FaultRule(path="/datasets/*/samples*", method="GET", error_rate=1.0, times=1),
            FaultRule(path="/s3/*", method="GET", drop_rate=1.0, times=2),
            FaultRule(path="/assets/", method="POST", error_rate=1.0, times=2),
            FaultRule(path="/labels/*", method="PUT", throttle_rate=1.0, retry_after_s=0, times=2),
            FaultRule(path="*", error_rate=0.2, throttle_rate=0.1, retry_after_s=0, drop_rate=0.05),
        ],
        seed=11,
    )
    where = (request, emulator, tmp_path, tiny_models_dir, seeded.full_name, settings)

    # The driver dies after recording 3 samples; deliveries in flight may have written more.
    stopping = CountingProgress(stop_at=3)
    with pytest.raises(Stopped):
        run_engine(engine, *where, stopping, "out1")
    assert stopping.closed
    first = outcomes_by_uuid(read_report(tmp_path / "out1" / "report.json"))
    # The overlapped engine finishes and records the deliveries in flight before it raises
    # (tests/test_overlap.py); the others stop at the third.
    assert len(first) == 3 or (engine == "overlapped" and 3 < len(first) <= 8)
    assert {o["result"] for o in first.values()} == {"labeled"}

    progress = CountingProgress()
    report = run_engine(engine, *where, progress, "out2")
    rerun = outcomes_by_uuid(report)

    faulted = [r for r in emulator.requests if r.fault is not None]
    emulator.clear_faults()
    assert {r.fault for r in faulted} == {"error", "throttle", "drop"}
    assert {r.path.split("/")[1] for r in faulted} >= {"datasets", "labels", "assets", "s3"}
    # The rerun lists the server again: what the first run wrote is done, recorded or not.
    assert set(first).isdisjoint(rerun)
    assert len(first) + len(rerun) <= 8
    assert report["summary"]["counts"] == {"labeled": len(rerun)}
    # The bar ends full. Its total differs by engine: Ray counts the samples it selected, the
    # local engines every sample listed (those already labeled advance it as they pass).
    assert progress.total == progress.advanced == (len(rerun) if engine == "ray" else 8)
    assert_labeled_once(emulator, segments_client, seeded)
