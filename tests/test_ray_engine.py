"""``prelabel run --engine ray`` on a local Ray instance, against the emulator, tiny models.

One Ray instance for the module (``ray.init(num_cpus=2)``: starting one costs about 3 s). A run
gets two prediction actors at half a CPU and one torch thread each (or one actor at a whole CPU
where two add nothing but startup time), beside two upload actors at a quarter CPU each: 1.5 of
the 2 CPUs, so both pools are up at once. Most of a run's time is the actors' startup (a fresh
process importing torch and transformers, about 5 s), so the tests keep the number of runs low.

The actors run in Ray worker processes, which inherit this process's environment at
``ray.init``: ``PRELABEL_RAY_PID_DIR`` (each actor leaves a ``predict-PID`` or ``deliver-PID``
file there when it has started, so tests see how many actors were started and can kill one),
``OMP_NUM_THREADS=1``, no proxy for 127.0.0.1, and the step faults of ``tests/step_faults.py``
(Ray's ``worker_process_setup_hook`` arranges them in every worker, applied when the worker
imports the steps or the pipeline, so Ray's own workers never import torch; idle until a test
writes the faults file). Results are checked on the emulator (labels, write counters, the
request log) or in the report and state files the driver leaves.

Marked ``ray``: ``pytest -m "not ray"`` leaves them out; ``.ci/run`` runs them.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import pickle
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from segments import SegmentsClient

from prelabel.emulator import Emulator, FaultRule
from prelabel.errors import ConfigError
from prelabel.run.job import RunOptions
from prelabel.run.report import RunSummary
from prelabel.state import LABELED, SKIPPED, StateStore
from tests.connector_helpers import (
    SAM3_PIPELINE,
    assert_valid_prelabel,
    human_attributes,
    make_settings,
    outcomes_by_uuid,
    read_report,
    requests_matching,
    state_record,
    state_stage,
    wait_for,
    write_config,
)
from tests.fixtures.emulator import (
    DEMO_CATEGORIES,
    EMULATOR_API_KEY,
    SeededDataset,
    clean_proxies,
    seed_dataset_via_sdk,
)
from tests.step_faults import (
    BATCHES_ENV,
    FAULTS_ENV,
    STEPS,
    assert_only_broken_samples_failed,
    one_sample_per_step,
)

pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray")]

CATEGORY_IDS = [c["id"] for c in DEMO_CATEGORIES]
GT = "ground-truth"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def worker_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The files the actors read and write besides the emulator: PIDs, faults, batches."""
    folder = tmp_path_factory.mktemp("ray-files")
    (folder / "pids").mkdir()
    return {"pids": folder / "pids", "faults": folder / "faults.json", "batches": folder / "b.txt"}


@pytest.fixture(scope="module")
def pid_dir(worker_files: dict[str, Path]) -> Iterator[Path]:
    """A local Ray instance for the module; yields the folder actors note their PIDs in."""
    ray = pytest.importorskip("ray")
    folder = worker_files["pids"]
    with pytest.MonkeyPatch.context() as env:
        # Set before ray.init: the raylet, and through it every worker, inherits them.
        env.setenv("PRELABEL_RAY_PID_DIR", str(folder))
        env.setenv("OMP_NUM_THREADS", "1")
        env.setenv(FAULTS_ENV, str(worker_files["faults"]))
        env.setenv(BATCHES_ENV, str(worker_files["batches"]))
        # The workers import tests.step_faults for the setup hook.
        env.setenv("PYTHONPATH", str(REPO))
        env.delenv("RAY_ADDRESS", raising=False)
        clean_proxies(env)
        # "local": a new instance even when a cluster runs on this machine.
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"worker_process_setup_hook": "tests.step_faults.install_on_import"},
        )
        try:
            worker_env = ray.get(
                ray.remote(num_cpus=0)(
                    lambda: {
                        k: os.environ.get(k)
                        for k in ("PRELABEL_RAY_PID_DIR", "OMP_NUM_THREADS", "SEGMENTS_API_KEY")
                    }
                ).remote()
            )
            assert worker_env == {
                "PRELABEL_RAY_PID_DIR": str(folder),
                "OMP_NUM_THREADS": "1",
                "SEGMENTS_API_KEY": None,
            }
            yield folder
        finally:
            ray.shutdown()


def ray_options(**overrides: Any) -> Any:
    from prelabel.run.ray_engine import RayOptions

    # 2 x 0.5 CPU for prediction + 2 x 0.25 for uploads fit in num_cpus=2.
    defaults: dict[str, Any] = {
        "workers": 2,
        "cpus_per_worker": 0.5,
        "torch_threads": 1,
        "batch_size": 1,
        "upload_workers": 2,
    }
    return RayOptions(**{**defaults, **overrides})


@dataclass
class RayRun:
    summary: RunSummary
    report: dict[str, Any]
    #: PIDs of the prediction actors this run started (restarted actors included).
    predict_pids: set[int]
    deliver_pids: set[int]

    @property
    def outcomes(self) -> dict[str, dict[str, Any]]:
        return outcomes_by_uuid(self.report)


def clear(folder: Path) -> None:
    for old in folder.iterdir():
        old.unlink()


def pids(folder: Path, role: str) -> set[int]:
    return {int(p.name.split("-", 1)[1]) for p in folder.glob(f"{role}-*")}


def run_ray(
    emulator: Emulator,
    tmp_path: Path,
    pid_dir: Path,
    models_dir: Path,
    dataset: str,
    *,
    settings: Any = None,
    output_dir: str = "out",
    options: Any = None,
    progress: Any = None,
    **run_options: Any,
) -> RayRun:
    """``run_on_ray`` minus the CLI, with the state in ``tmp_path/state``."""
    from prelabel.run.ray_engine import run_on_ray

    clear(pid_dir)
    state = StateStore.in_dir(tmp_path / "state")
    try:
        summary = run_on_ray(
            EMULATOR_API_KEY,
            settings or make_settings(emulator.url),
            RunOptions(dataset=dataset, output_dir=tmp_path / output_dir, **run_options),
            options or ray_options(),
            state=state,
            models_dir=models_dir,
            progress=progress,
        )
    finally:
        state.close()
    assert summary.report_path == tmp_path / output_dir / "report.json"
    return RayRun(
        summary,
        read_report(summary.report_path),
        pids(pid_dir, "predict"),
        pids(pid_dir, "deliver"),
    )


def assert_labeled_once(emulator: Emulator, client: SegmentsClient, seeded: SeededDataset) -> None:
    """Every sample has exactly one label write (counted by the emulator), a valid pre-label."""
    for uuid in seeded.sample_uuids:
        assert emulator.label_write_count(uuid) == 1, uuid
        assert_valid_prelabel(client, uuid, image_size=seeded.image_size, category_ids=CATEGORY_IDS)


# People's labels -------------------------------------------------------------------------------


def test_labels_a_person_saved_before_or_during_the_run_are_left_alone(
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models_dir: Path,
    pid_dir: Path,
    tmp_path: Path,
) -> None:
    seeded = seed_dataset_via_sdk(segments_client, name="ray-people", n_images=2)
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
    one_actor = ray_options(workers=1, cpus_per_worker=1.0, upload_workers=1)
    result = run_ray(
        emulator, tmp_path, pid_dir, tiny_models_dir, seeded.full_name, options=one_actor
    )
    thread.join(timeout=5)

    for uuid in (before, during):
        label = emulator.get_label(uuid)
        assert label is not None
        assert label["label_status"] == "LABELED"
        assert label["attributes"] == human
        assert emulator.label_write_count(uuid) == 0
    assert requests_matching(emulator, "PUT", "/labels/") == []
    assert set(result.outcomes) == {during}  # `before` was never selected
    assert result.outcomes[during]["result"] == "skipped"
    assert "LABELED" in result.outcomes[during]["reason"]
    assert result.summary.counts == {"skipped": 1}
    assert state_stage(tmp_path, seeded.full_name, during) == SKIPPED


# Faults ----------------------------------------------------------------------------------------


class Stopped(Exception):
    """The driver dies: raised from the progress display, in the loop that consumes results."""


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


def test_under_faults_a_run_stopped_mid_way_and_its_rerun_label_every_sample_exactly_once(
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models_dir: Path,
    pid_dir: Path,
    tmp_path: Path,
) -> None:
    seeded = seed_dataset_via_sdk(segments_client, name="ray-faulty", n_images=8)
    settings = make_settings(emulator.url, retry_attempts=10, page_size=3)
    emulator.clear_requests()
    emulator.set_faults(
        [
            FaultRule(path="/api_status/"),  # connecting under faults: test_segments_client
            # Certain faults on each stage (the random mix below depends on how the processes'
            # requests interleave): the driver's listing, image downloads on the prediction
            # actors, asset creation and label writes on the upload actors.
            FaultRule(path="/datasets/*/samples*", method="GET", error_rate=1.0, times=1),
            FaultRule(path="/s3/*", method="GET", drop_rate=1.0, times=2),
            FaultRule(path="/assets/", method="POST", error_rate=1.0, times=2),
            FaultRule(path="/labels/*", method="PUT", throttle_rate=1.0, retry_after_s=0, times=2),
            FaultRule(path="*", error_rate=0.2, throttle_rate=0.1, retry_after_s=0, drop_rate=0.05),
        ],
        seed=11,
    )

    one_actor = ray_options(workers=1, cpus_per_worker=1.0, upload_workers=1)
    # The driver dies after recording 3 samples; the actors may have delivered more by then.
    stopping = CountingProgress(stop_at=3)
    with pytest.raises(Stopped):
        run_ray(
            emulator,
            tmp_path,
            pid_dir,
            tiny_models_dir,
            seeded.full_name,
            settings=settings,
            options=one_actor,
            progress=stopping,
            output_dir="out1",
        )
    assert stopping.closed
    first = outcomes_by_uuid(read_report(tmp_path / "out1" / "report.json"))
    assert len(first) == 3 and {o["result"] for o in first.values()} == {"labeled"}

    progress = CountingProgress()
    rerun = run_ray(
        emulator,
        tmp_path,
        pid_dir,
        tiny_models_dir,
        seeded.full_name,
        settings=settings,
        options=one_actor,
        progress=progress,
        output_dir="out2",
    )

    faulted = [r for r in emulator.requests if r.fault is not None]
    emulator.clear_faults()
    assert {r.fault for r in faulted} == {"error", "throttle", "drop"}
    assert {r.path.split("/")[1] for r in faulted} >= {"datasets", "labels", "assets", "s3"}
    # The rerun lists the server again: what the first run wrote is done, recorded or not.
    assert set(first).isdisjoint(rerun.outcomes)
    assert len(first) + len(rerun.outcomes) <= 8
    assert rerun.summary.counts == {"labeled": len(rerun.outcomes)}
    assert progress.total == progress.advanced == len(rerun.outcomes)
    assert_labeled_once(emulator, segments_client, seeded)


# An actor killed mid-run -----------------------------------------------------------------------


def test_a_prediction_actor_killed_mid_run_is_replaced_and_no_sample_is_written_twice(
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models_dir: Path,
    pid_dir: Path,
    tmp_path: Path,
) -> None:
    seeded = seed_dataset_via_sdk(segments_client, name="ray-kill", n_images=8)
    n = len(seeded.sample_uuids)
    # Image downloads take 0.3 s: eight samples over two actors keep them busy for seconds.
    emulator.set_faults([FaultRule(path="/s3/*", method="GET", latency_s=0.3)])
    killed: list[tuple[int, int]] = []  # (pid, label writes at the time)

    def killer() -> None:
        wait_for(lambda: len(pids(pid_dir, "predict")) == 2, 60, "two prediction actors")
        wait_for(lambda: bool(requests_matching(emulator, "PUT", "/labels/")), 60, "a write")
        # The actor that started first: it has been working for a while.
        victim = int(min(pid_dir.glob("predict-*"), key=os.path.getmtime).name.split("-")[1])
        writes = sum(emulator.label_write_count(u) for u in seeded.sample_uuids)
        os.kill(victim, signal.SIGKILL)
        killed.append((victim, writes))

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    result = run_ray(emulator, tmp_path, pid_dir, tiny_models_dir, seeded.full_name)
    thread.join(timeout=5)

    assert len(killed) == 1
    victim, writes_then = killed[0]
    assert writes_then < n, "the kill must land mid-run"
    # Ray restarted the actor (a new process loaded the model) and retried its batch.
    assert victim in result.predict_pids and len(result.predict_pids) == 3
    emulator.clear_faults()
    assert result.summary.counts == {"labeled": n}
    assert set(result.outcomes) == set(seeded.sample_uuids)
    assert_labeled_once(emulator, segments_client, seeded)

    again = run_ray(
        emulator, tmp_path, pid_dir, tiny_models_dir, seeded.full_name, output_dir="out2"
    )
    assert again.report["samples"] == []
    assert_labeled_once(emulator, segments_client, seeded)


def predict_in_process(
    client: SegmentsClient, models_dir: Path, tmp_path: Path, name: str, settings: Any
) -> tuple[SeededDataset, Any, Any]:
    """A one-sample dataset ``name`` put through the Ray engine's prediction stage in-process
    (the actor setup a worker gets, the actor's own model loading); returns the dataset, the
    setup and the predicted batch, ready for the upload stage."""
    from prelabel.run.job import Job
    from prelabel.run.ray_engine import _ActorSetup, _Predict
    from prelabel.segments.client import SampleRef, SegmentsApi
    from prelabel.segments.dataset import check_dataset

    seeded = seed_dataset_via_sdk(client, name=name, n_images=1)
    [uuid] = seeded.sample_uuids
    options = RunOptions(dataset=seeded.full_name, output_dir=tmp_path)
    api = SegmentsApi.connect(EMULATOR_API_KEY, settings.remote)
    try:
        info, taxonomy = check_dataset(api, settings, options.dataset, options.labelset)
    finally:
        api.close()
    setup = _ActorSetup(EMULATOR_API_KEY, settings.model_dump_json(), options, taxonomy, info)
    image_url = client.get_sample(uuid).attributes.image.url
    sample = SampleRef(uuid, seeded.sample_names[0], image_url, None)
    predicted = _Predict(setup, models_dir=str(models_dir), torch_threads=1)(
        {"job": [pickle.dumps(Job(sample))]}
    )
    return seeded, setup, predicted


def test_a_retried_delivery_finds_its_earlier_write_and_does_not_write_again(
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models_dir: Path,
    tmp_path: Path,
) -> None:
    """What Ray does when an upload actor dies after its upload but before answering: the same
    batch runs again on another actor, and uploads again. Here both runs of the stage are
    called in-process, and each job they return goes through the driver's label write: the
    label is written once, with the first upload's bitmap."""
    from prelabel.run.ray_engine import _Deliver, _jobs, _NoModel
    from prelabel.run.steps import SampleSteps

    seeded, setup, predicted = predict_in_process(
        segments_client, tiny_models_dir, tmp_path, "ray-retry", make_settings(emulator.url)
    )
    [uuid] = seeded.sample_uuids

    [first] = _jobs(_Deliver(setup)(predicted))
    [retried] = _jobs(_Deliver(setup)(predicted))
    assert first.uploaded and retried.uploaded and first.outcome is None  # not written yet
    driver = setup.steps(_NoModel())
    try:
        first, retried = driver.write(first), driver.write(retried)
    finally:
        driver.api.close()

    assert isinstance(driver, SampleSteps)
    assert first.outcome is not None and retried.outcome is not None
    assert first.outcome.result == "labeled"
    assert retried.outcome.result == "skipped"
    assert retried.outcome.reason == "already pre-labeled"
    assert emulator.label_write_count(uuid) == 1
    label = segments_client.get_label(uuid)
    assert first.pending is not None
    assert label.attributes.model_dump()["segmentation_bitmap"]["url"] == first.pending.asset_url
    assert "api_key" not in repr(setup) and EMULATOR_API_KEY not in repr(setup)


def test_the_driver_records_the_upload_before_the_label_write(
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models_dir: Path,
    pid_dir: Path,
    tmp_path: Path,
) -> None:
    """The order ``run/steps.py`` promises, on Ray too: the upload actor reports the bitmap
    back, the driver records it, and only then is the label written. The label PUT is held
    (its connection hangs, then closes unanswered): while it hangs, the state file already
    has the bitmap, so a run killed there reuses it. The write is then retried once."""
    seeded = seed_dataset_via_sdk(segments_client, name="ray-order", n_images=2)
    emulator.set_faults(
        [FaultRule(path="/labels/*", method="PUT", hang_rate=1.0, hang_s=3.0, times=1)]
    )
    uploads_before = emulator.asset_upload_count()
    box: dict[str, Any] = {}
    one_actor_each = ray_options(workers=1, upload_workers=1)

    def run() -> None:
        box["run"] = run_ray(
            emulator,
            tmp_path,
            pid_dir,
            tiny_models_dir,
            seeded.full_name,
            options=one_actor_each,
        )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 240
    while not (held := requests_matching(emulator, "PUT", "/labels/", fault="hang")):
        assert thread.is_alive(), "the run ended before its label write"
        assert time.monotonic() < deadline, "the label write never started"
        time.sleep(0.05)
    uuid = held[0].path.split("/")[2]
    recorded = state_record(tmp_path, seeded.full_name, uuid)
    held_writes = emulator.label_write_count(uuid)
    thread.join(240)
    emulator.clear_faults()

    assert held_writes == 0
    assert recorded is not None and recorded.stage == "uploaded" and recorded.asset_url
    result = box["run"]
    assert {o["result"] for o in result.outcomes.values()} == {"labeled"}
    assert [emulator.label_write_count(u) for u in seeded.sample_uuids] == [1, 1]
    assert emulator.asset_upload_count() - uploads_before == 2  # each bitmap once
    label = segments_client.get_label(uuid)
    assert label.attributes.model_dump()["segmentation_bitmap"]["url"] == recorded.asset_url


def test_a_dry_run_on_ray_writes_nothing_and_the_driver_saves_what_it_would_upload(
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models_dir: Path,
    pid_dir: Path,
    tmp_path: Path,
) -> None:
    seeded = seed_dataset_via_sdk(segments_client, name="ray-dry", n_images=2)
    emulator.clear_requests()

    run = run_ray(
        emulator,
        tmp_path,
        pid_dir,
        tiny_models_dir,
        seeded.full_name,
        options=ray_options(workers=1, upload_workers=1),
        dry_run=True,
    )

    assert {o["result"] for o in run.outcomes.values()} == {"dry-run"}
    assert set(run.outcomes) == set(seeded.sample_uuids)
    assert [r for r in emulator.requests if r.method in {"POST", "PUT", "PATCH", "DELETE"}] == []
    store = StateStore.in_dir(tmp_path / "state")
    try:
        assert store.counts(seeded.full_name, "ground-truth") == {}
    finally:
        store.close()
    for uuid in seeded.sample_uuids:
        saved = json.loads((tmp_path / "out" / "dry-run" / f"{uuid}.json").read_text())
        assert saved["label_status"] == "PRELABELED" and saved["attributes"]["annotations"]
        assert (tmp_path / "out" / "dry-run" / f"{uuid}.png").stat().st_size > 0


def test_an_image_sequence_dataset_is_labeled_on_ray_and_a_rerun_has_nothing_to_do(
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models_dir: Path,
    pid_dir: Path,
    tmp_path: Path,
) -> None:
    """The actors build the dataset's steps (``steps_for``): a sequence's frames stream through
    SAM 2 on the prediction actor, the driver records the label built from them, then writes
    it. The labels obey the sequence rules ``prelabel run`` is held to locally."""
    from prelabel.config import SequenceSettings
    from prelabel.emulator.sequences import moving_shapes, seed_sequence_dataset
    from tests.test_run_sequences import assert_valid_sequence_prelabel

    clips = {
        "walk": list(moving_shapes(3, seed=1)),
        "quiet": list(moving_shapes(3, seed=3, empty_frames={1})),
    }
    dataset = "jane/ray-clips"
    uuids = seed_sequence_dataset(emulator, dataset, clips, DEMO_CATEGORIES).sample_uuids
    settings = make_settings(emulator.url).model_copy(
        update={"sequence": SequenceSettings(keyframe_interval=2)}
    )
    one_actor = ray_options(workers=1, cpus_per_worker=1.0, upload_workers=1)

    run = run_ray(
        emulator, tmp_path, pid_dir, tiny_models_dir, dataset, settings=settings, options=one_actor
    )

    assert {o["result"] for o in run.outcomes.values()} == {"labeled"}, run.outcomes
    assert set(run.outcomes) == set(uuids)
    for name, uuid in zip(clips, uuids, strict=True):
        assert_valid_sequence_prelabel(segments_client, uuid, clips[name])
        assert state_stage(tmp_path, dataset, uuid) == LABELED
    assert emulator.label_write_counts() == {(u, GT): 1 for u in uuids}
    rerun = run_ray(
        emulator,
        tmp_path,
        pid_dir,
        tiny_models_dir,
        dataset,
        settings=settings,
        options=one_actor,
        output_dir="rerun",
    )
    assert rerun.summary.counts == {}
    assert emulator.label_write_counts() == {(u, GT): 1 for u in uuids}


def test_the_ray_stages_predict_and_upload_with_the_sam3_backend(
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models_dir: Path,
    tmp_path: Path,
) -> None:
    """``models.backend: sam3`` through the Ray engine's stages (the actor setup a worker gets,
    the prediction actor's own loading, the upload actor, the driver's label write), called
    in-process as above."""
    from prelabel.run.ray_engine import _Deliver, _jobs, _NoModel

    settings = make_settings(emulator.url, pipeline=SAM3_PIPELINE, backend="sam3")
    seeded, setup, predicted = predict_in_process(
        segments_client, tiny_models_dir, tmp_path, "ray-sam3", settings
    )
    [uuid] = seeded.sample_uuids

    [uploaded] = _jobs(_Deliver(setup)(predicted))
    assert uploaded.uploaded and uploaded.outcome is None  # the driver writes the label
    driver = setup.steps(_NoModel())
    try:
        done = driver.write(uploaded)
    finally:
        driver.api.close()

    assert done.outcome is not None and done.outcome.result == "labeled"
    attributes, _ = assert_valid_prelabel(
        segments_client, uuid, image_size=seeded.image_size, category_ids=CATEGORY_IDS
    )
    assert attributes["annotations"], "an empty pre-label"


# The CLI ---------------------------------------------------------------------------------------


def invoke_cli(
    tmp_path: Path, api_url: str, dataset: str, models: Path, *extra: str, engine: str = "ray"
) -> Any:
    from prelabel.cli import main

    args = [
        "run",
        "--dataset",
        dataset,
        "--api-url",
        api_url,
        "--state-dir",
        str(tmp_path / "state"),
        "--config",
        str(write_config(tmp_path / "config.yaml")),
        "--models",
        str(models),
        "-q",
        "--engine",
        engine,
        *extra,
    ]
    return CliRunner().invoke(main, args, env={"SEGMENTS_API_KEY": EMULATOR_API_KEY})


@pytest.fixture
def _restore_log_record_factory() -> Iterator[None]:
    """``run`` installs a redacting record factory process-wide; undo it after the test."""
    factory = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(factory)


@pytest.mark.usefixtures("_restore_log_record_factory")
def test_cli_two_actors_label_every_sample_once_and_a_rerun_has_nothing_to_do(
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models_dir: Path,
    pid_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import prelabel.run.ray_engine

    # The CLI sets address, --workers and --gpus-per-worker; the rest as in ray_options().
    small = functools.partial(
        prelabel.run.ray_engine.RayOptions, cpus_per_worker=0.5, torch_threads=1, batch_size=1
    )
    monkeypatch.setattr(prelabel.run.ray_engine, "RayOptions", small)
    seeded = seed_dataset_via_sdk(segments_client, name="ray-cli", n_images=8)
    clear(pid_dir)
    out = tmp_path / "out"

    result = invoke_cli(
        tmp_path,
        emulator.url,
        seeded.full_name,
        tiny_models_dir,
        "--workers",
        "2",
        "--output-dir",
        str(out),
    )

    assert result.exit_code == 0, (result.output, result.exception)
    report = read_report(out / "report.json")
    assert report["engine"] == "ray"
    assert report["summary"]["counts"] == {"labeled": 8}
    outcomes = outcomes_by_uuid(report)
    assert set(outcomes) == set(seeded.sample_uuids)  # in the order the cluster finished them
    assert_labeled_once(emulator, segments_client, seeded)
    for uuid in seeded.sample_uuids:
        label = segments_client.get_label(uuid)
        assert outcomes[uuid]["result"] == "labeled"
        assert outcomes[uuid]["segments"] == len(label.attributes.model_dump()["annotations"])
        assert outcomes[uuid]["score"] == pytest.approx(label.score)
        assert state_stage(tmp_path, seeded.full_name, uuid) == LABELED
    assert f"report: {out / 'report.json'}" in result.stderr
    assert re.search(r"labeled\s+8", result.stderr), result.stderr
    # Two prediction actors (one model copy each), none of them this process; two upload actors.
    predict = pids(pid_dir, "predict")
    assert len(predict) == 2 and os.getpid() not in predict
    assert len(pids(pid_dir, "deliver")) == 2

    clear(pid_dir)
    uploads = emulator.asset_upload_count()
    again = invoke_cli(
        tmp_path,
        emulator.url,
        seeded.full_name,
        tiny_models_dir,
        "--workers",
        "2",
        "--output-dir",
        str(tmp_path / "out2"),
    )

    assert again.exit_code == 0, (again.output, again.exception)
    assert "nothing to do" in again.stderr
    assert read_report(tmp_path / "out2" / "report.json")["samples"] == []
    assert pids(pid_dir, "predict") == set()  # no actor was even started
    assert emulator.asset_upload_count() == uploads
    assert_labeled_once(emulator, segments_client, seeded)


@pytest.mark.usefixtures("_restore_log_record_factory")
def test_an_actor_that_cannot_load_the_models_ends_the_run_with_a_one_line_error(
    emulator: Emulator,
    segments_client: SegmentsClient,
    pid_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import prelabel.run.ray_engine

    one_upload_actor = functools.partial(prelabel.run.ray_engine.RayOptions, upload_workers=1)
    monkeypatch.setattr(prelabel.run.ray_engine, "RayOptions", one_upload_actor)
    seeded = seed_dataset_via_sdk(segments_client, name="ray-no-models", n_images=2)
    empty = tmp_path / "models"  # e.g. the weights were not copied to a worker node
    empty.mkdir()

    result = invoke_cli(
        tmp_path,
        emulator.url,
        seeded.full_name,
        empty,
        "--workers",
        "1",
        "--output-dir",
        str(tmp_path / "out"),
    )

    # Exit 2 and our own line last, as in the local engine (Ray Data logs the remote traceback
    # before that; the exception itself is handled, not a crash).
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == [
        f"Error: a Ray actor failed to start: --models {empty} lacks the "
        "subdirectories grounding_dino, sam, clipseg."
    ]
    assert requests_matching(emulator, "PUT", "/labels/") == []


@pytest.mark.usefixtures("_restore_log_record_factory")
def test_engine_ray_without_ray_installed_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prelabel.run.ray_engine import _ray

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError

    with pytest.raises(ConfigError, match=r"pip install 'prelabel\[ray\]'"):
        _ray()
    result = invoke_cli(tmp_path, "http://127.0.0.1:9/", "jane/demo", tmp_path)
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: the ray engine needs Ray: pip install 'prelabel[ray]'"
    )


# One lifecycle: the same failure rules as the local engines --------------------------------------


def test_an_unexpected_exception_in_any_step_fails_only_its_sample_and_actors_call_predict_batch(
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models_dir: Path,
    pid_dir: Path,
    worker_files: dict[str, Path],
    tmp_path: Path,
) -> None:
    """One run for two things: the failure rules of the local engines hold per step, and with
    ``batch_size`` above one the actor predicts in ``predict_batch`` calls of up to that many.

    Eight samples, batches of four: the first holds the check, fetch, encode and deliver
    samples, the second the infer sample among three good ones. That batch's
    ``predict_batch`` call raises (tests/step_faults.py), so the steps fall back to predicting
    one by one: only the infer sample fails.
    """
    seeded = seed_dataset_via_sdk(segments_client, name="ray-steps", n_images=8)
    names = seeded.sample_names
    # check, fetch, infer, encode, deliver: the infer sample is the second batch's second.
    broken = one_sample_per_step(
        [names[0], names[1], names[5], names[2], names[3]], worker_files["faults"]
    )
    worker_files["batches"].unlink(missing_ok=True)
    try:
        result = run_ray(
            emulator,
            tmp_path,
            pid_dir,
            tiny_models_dir,
            seeded.full_name,
            options=ray_options(workers=1, cpus_per_worker=1.0, batch_size=4),
        )
    finally:
        worker_files["faults"].unlink()

    # The Ray job went on to the end.
    assert_only_broken_samples_failed(result.outcomes.values(), broken, names)
    assert result.summary.counts == {"failed": len(STEPS), "labeled": 8 - len(STEPS)}
    lines = worker_files["batches"].read_text().splitlines()
    sizes = [int(line.split()[0]) for line in lines]
    assert sizes and max(sizes) > 1 and all(size <= 4 for size in sizes), lines
    # The batch with the infer sample raised, then each of its samples was predicted alone.
    assert "4 injected" in lines, lines
    by_name = dict(zip(names, seeded.sample_uuids, strict=True))
    for name, uuid in by_name.items():
        if name in broken.values():
            assert emulator.label_write_count(uuid) == 0, name
        else:
            assert emulator.label_write_count(uuid) == 1, name
            assert_valid_prelabel(
                segments_client, uuid, image_size=seeded.image_size, category_ids=CATEGORY_IDS
            )


@pytest.mark.usefixtures("_restore_log_record_factory")
@pytest.mark.parametrize("engine", ["ray", "local"])
def test_three_samples_in_a_row_failing_on_server_trouble_stop_every_engine_alike(
    engine: str,
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models_dir: Path,
    pid_dir: Path,
    tmp_path: Path,
) -> None:
    seeded = seed_dataset_via_sdk(segments_client, name=f"down-{engine}", n_images=12)
    emulator.clear_requests()
    emulator.set_faults(
        [FaultRule(path="/assets/*", method="POST", error_rate=1.0, error_statuses=(503,))]
    )
    extra = ["--workers", "1"] if engine == "ray" else []

    result = invoke_cli(
        tmp_path,
        emulator.url,
        seeded.full_name,
        tiny_models_dir,
        *extra,
        "--output-dir",
        str(tmp_path / "out"),
        engine=engine,
    )

    emulator.clear_faults()
    assert result.exit_code == 2, (result.output, result.exception)
    [error] = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert error.startswith("Error: stopping: 3 samples in a row failed to reach the server")
    assert error.endswith("rerun to resume")
    assert requests_matching(emulator, "PUT", "/labels/") == []
    failed = [o for o in read_report(tmp_path / "out" / "report.json")["samples"]]
    assert 3 <= len(failed) < 12 and all(o["transient"] for o in failed)
