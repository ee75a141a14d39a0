"""``prelabel run --engine ray`` on a local Ray instance, against the emulator, tiny models:
what only the Ray engine has (actors killed and restarted, a delivery Ray retries, the upload
recorded before the driver's label write, dry runs, the actors' own model loading).

What every engine promises (labels once, stops on server trouble, a step's exception fails one
sample, a person's label untouched, resume) is tried on Ray beside the local engines in
``tests/test_engine_contract.py``. The Ray instance is the one of
``tests/fixtures/ray_cluster.py``, shared by both modules (its docstring says how actors are
sized and what their environment holds). Most of a run's time is the actors' startup (a fresh
process importing torch and transformers, about 5 s), so the tests keep the number of runs low.
Results are checked on the emulator (labels, write counters, the request log) or in the report
and state files the driver leaves.

Marked ``ray``: ``pytest -m "not ray"`` leaves them out; ``.ci/run`` runs them.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from segments import SegmentsClient

from prelabel.emulator import Emulator, FaultRule
from prelabel.errors import ConfigError
from prelabel.run.job import RunOptions
from prelabel.state import LABELED, StateStore
from tests.connector_helpers import (
    SAM3_PIPELINE,
    assert_valid_prelabel,
    make_settings,
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
    seed_dataset_via_sdk,
)
from tests.fixtures.ray_cluster import RAY_MARKS, RayRun, clear, pids, ray_options
from tests.step_faults import held_pids, hold, release

pytestmark = list(RAY_MARKS)

CATEGORY_IDS = [c["id"] for c in DEMO_CATEGORIES]
GT = "ground-truth"


def assert_labeled_once(emulator: Emulator, client: SegmentsClient, seeded: SeededDataset) -> None:
    """Every sample has exactly one label write (counted by the emulator), a valid pre-label."""
    for uuid in seeded.sample_uuids:
        assert emulator.label_write_count(uuid) == 1, uuid
        assert_valid_prelabel(client, uuid, image_size=seeded.image_size, category_ids=CATEGORY_IDS)


# An actor killed mid-run -----------------------------------------------------------------------


def test_a_prediction_actor_killed_mid_run_is_replaced_and_no_sample_is_written_twice(
    emulator: Emulator,
    segments_client: SegmentsClient,
    pid_dir: Path,
    worker_files: dict[str, Path],
    ray_runner: Callable[..., RayRun],
) -> None:
    seeded = seed_dataset_via_sdk(segments_client, name="ray-kill", n_images=8)
    n = len(seeded.sample_uuids)
    # Every fetch waits until the kill, so the victim is mid-batch whatever the machine's load:
    # on a loaded CI machine a second actor (a process importing torch) once came up only after
    # the first had labeled all eight, and timed slow downloads did not always bridge that.
    faults = worker_files["faults"]
    hold(faults, "fetch")
    killed: list[tuple[int, int]] = []  # (pid, label writes at the time)
    errors: list[BaseException] = []

    def predicting() -> set[int]:
        return pids(pid_dir, "predict")

    def killer() -> None:
        try:
            wait_for(lambda: len(predicting()) == 2, 300, "two prediction actors")
            wait_for(lambda: bool(predicting() & held_pids(faults)), 300, "an actor mid-batch")
            # The run cannot move on while held: these waits race no clock but the actors'
            # start. The oldest held actor is the victim.
            victim = min(predicting() & held_pids(faults))
            writes = sum(emulator.label_write_count(u) for u in seeded.sample_uuids)
            os.kill(victim, signal.SIGKILL)
            killed.append((victim, writes))
        except BaseException as exc:
            errors.append(exc)
        finally:
            release(faults)

    clear(pid_dir)  # an earlier test's PID files must not count as this run's actors
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        result = ray_runner(seeded.full_name)
    finally:
        release(faults)
    thread.join(timeout=5)

    assert not errors, errors
    assert len(killed) == 1
    victim, writes_then = killed[0]
    assert writes_then < n, "the kill must land mid-run"
    # Ray restarted the actor (a new process loaded the model) and retried its batch.
    assert victim in result.predict_pids and len(result.predict_pids) == 3
    assert result.summary.counts == {"labeled": n}
    assert set(result.outcomes) == set(seeded.sample_uuids)
    assert_labeled_once(emulator, segments_client, seeded)

    again = ray_runner(seeded.full_name, output_dir="out2")
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
    ray_runner: Callable[..., RayRun],
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
        box["run"] = ray_runner(seeded.full_name, options=one_actor_each)

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
    ray_runner: Callable[..., RayRun],
    tmp_path: Path,
) -> None:
    seeded = seed_dataset_via_sdk(segments_client, name="ray-dry", n_images=2)
    emulator.clear_requests()

    run = ray_runner(
        seeded.full_name, options=ray_options(workers=1, upload_workers=1), dry_run=True
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
    tmp_path: Path,
    ray_runner: Callable[..., RayRun],
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

    run = ray_runner(dataset, settings=settings, options=one_actor)

    assert {o["result"] for o in run.outcomes.values()} == {"labeled"}, run.outcomes
    assert set(run.outcomes) == set(uuids)
    for name, uuid in zip(clips, uuids, strict=True):
        assert_valid_sequence_prelabel(segments_client, uuid, clips[name])
        assert state_stage(tmp_path, dataset, uuid) == LABELED
    assert emulator.label_write_counts() == {(u, GT): 1 for u in uuids}
    rerun = ray_runner(dataset, settings=settings, options=one_actor, output_dir="rerun")
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


def invoke_cli(tmp_path: Path, api_url: str, dataset: str, models: Path, *extra: str) -> Any:
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
        "ray",
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


def test_box_and_polygon_datasets_are_labeled_on_ray_and_a_rerun_has_nothing_to_do(
    emulator: Emulator,
    segments_client: SegmentsClient,
    tmp_path: Path,
    ray_runner: Callable[..., RayRun],
) -> None:
    """On a ``bboxes`` dataset and an ``image-vector-sequence`` one the actors build the vector
    steps (``steps_for``); the encoded label travels back in the job, nothing is uploaded, and
    the driver writes it once. The labels obey section 12 as ``prelabel run``'s do locally."""
    from prelabel.emulator.sequences import moving_shapes, seed_sequence_dataset
    from tests.test_run_vector import seed, valid_annotations
    from tests.test_run_vector_sequences import assert_valid_vector_sequence

    one_actor = ray_options(workers=1, cpus_per_worker=1.0, upload_workers=1)
    images = seed(emulator, "bboxes")
    clips = {"walk": list(moving_shapes(3, seed=12))}
    [clip] = seed_sequence_dataset(
        emulator, "jane/ray-tracks", clips, DEMO_CATEGORIES, task_type="image-vector-sequence"
    ).sample_uuids
    settings = make_settings(emulator.url)

    for dataset, uuids in (("jane/bboxes", images), ("jane/ray-tracks", [clip])):
        out = dataset.replace("/", "-")
        run = ray_runner(dataset, settings=settings, options=one_actor, output_dir=out)
        assert {o["result"] for o in run.outcomes.values()} == {"labeled"}, run.outcomes
        assert set(run.outcomes) == set(uuids)
        again = ray_runner(dataset, settings=settings, options=one_actor, output_dir=f"{out}-2")
        assert again.summary.counts == {}
    for uuid in images:
        valid_annotations(segments_client, uuid, "bbox")
    frames = assert_valid_vector_sequence(segments_client, clip, clips["walk"], "bbox")
    assert any(frames), "no box in any frame"
    assert emulator.label_write_counts() == {(u, GT): 1 for u in [*images, clip]}
    # No bitmap travelled: nothing was uploaded as an asset during the runs.
    assert not requests_matching(emulator, "POST", "/assets")
