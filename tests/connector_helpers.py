"""Helpers shared by the connector tests (client, worker, CLI, resume after ``kill -9``).

Everything here talks to the emulator through the real ``segments-ai`` SDK or reads the
emulator's own state; nothing mocks the SDK. Settings use tiny retry waits and short timeouts so
the fault tests stay fast.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml
from segments import SegmentsClient
from segments.utils import bitmap2file, load_label_bitmap_from_url

from prelabel.config import ModelSettings, PipelineSettings, RemoteSettings, Settings
from prelabel.emulator import Emulator, RequestRecord
from prelabel.run.dataset import DatasetWorker
from prelabel.run.job import RunOptions
from prelabel.run.report import RunSummary
from prelabel.run.steps import SampleSteps
from prelabel.segments.client import SegmentsApi
from prelabel.segments.dataset import check_dataset
from prelabel.state import SampleRecord, StateStore
from tests.fixtures.emulator import EMULATOR_API_KEY

if TYPE_CHECKING:
    from prelabel.run.steps import Predictor

#: Longest any single run may take before a test calls it a deadlock.
DEADLOCK_S = 60.0

#: Thresholds at 0 make the tiny random models find something in every image, so labels are
#: non-empty; ``max_detections`` keeps SAM's batch (and the test) small.
LABELING_PIPELINE = PipelineSettings(
    box_threshold=0.0, text_threshold=0.0, min_area=0, max_detections=3
)
#: The same for ``models.backend: sam3``: every instance above score 0, so the tiny SAM 3's
#: random scores still give things (and its semantic maps stuff).
SAM3_PIPELINE = LABELING_PIPELINE.model_copy(update={"score_threshold": 0.0})

#: Remote settings for tests: waits of milliseconds, timeouts of seconds, a few attempts.
FAST_REMOTE: dict[str, Any] = {
    "connect_timeout_s": 2.0,
    "read_timeout_s": 5.0,
    "retry_attempts": 4,
    "retry_initial_s": 0.001,
    "retry_max_s": 0.01,
}


def remote_settings(api_url: str, **overrides: Any) -> RemoteSettings:
    return RemoteSettings(api_url=api_url, **{**FAST_REMOTE, **overrides})


def make_settings(
    api_url: str,
    *,
    pipeline: PipelineSettings = LABELING_PIPELINE,
    backend: str = "grounded_sam",
    **remote_overrides: Any,
) -> Settings:
    return Settings(
        models=ModelSettings(device="cpu", backend=backend),
        pipeline=pipeline,
        remote=remote_settings(api_url, **remote_overrides),
    )


def write_config(
    path: Path,
    *,
    pipeline: PipelineSettings = LABELING_PIPELINE,
    categories: dict[str, dict[str, Any]] | None = None,
    sequence: dict[str, Any] | None = None,
    backend: str = "grounded_sam",
    vector: dict[str, Any] | None = None,
    **remote_overrides: Any,
) -> Path:
    """A YAML config for ``prelabel run --config`` with fast retries and the given pipeline
    and model back-end."""
    data: dict[str, Any] = {
        "models": {"device": "cpu", "backend": backend},
        "pipeline": pipeline.model_dump(),
        "remote": {**FAST_REMOTE, **remote_overrides},
    }
    if categories:
        data["categories"] = categories
    if sequence:
        data["sequence"] = sequence
    if vector:
        data["vector"] = vector
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def human_attributes(client: SegmentsClient, size: tuple[int, int]) -> dict[str, Any]:
    """Label attributes as an annotator would save them: one object covering the left half."""
    width, height = size
    bitmap = np.zeros((height, width), dtype=np.uint32)
    bitmap[:, : width // 2] = 7
    asset = client.upload_asset(bitmap2file(bitmap), "human.png")
    return {
        "format_version": "0.1",
        "annotations": [{"id": 7, "category_id": 4}],
        "segmentation_bitmap": {"url": asset.url},
    }


def assert_valid_prelabel(
    client: SegmentsClient,
    sample_uuid: str,
    *,
    image_size: tuple[int, int],
    category_ids: Iterable[int],
    labelset: str = "ground-truth",
) -> tuple[dict[str, Any], np.ndarray]:
    """Read the label back through the SDK and check it is a well-formed PRELABELED bitmap.

    Returns the label attributes (as a dict) and the decoded id bitmap.
    """
    label = client.get_label(sample_uuid, labelset=labelset)
    assert str(getattr(label.label_status, "value", label.label_status)) == "PRELABELED"
    assert label.attributes is not None
    attributes = label.attributes.model_dump()
    bitmap = load_label_bitmap_from_url(attributes["segmentation_bitmap"]["url"])
    width, height = image_size
    assert bitmap.shape == (height, width)
    annotations = attributes["annotations"]
    ids = {a["id"] for a in annotations}
    assert len(ids) == len(annotations), "annotation ids must be unique"
    assert {int(i) for i in np.unique(bitmap)} - {0} == ids
    assert {a["category_id"] for a in annotations} <= set(category_ids)
    assert label.score is not None and 0.0 <= label.score <= 1.0
    return attributes, bitmap


def read_report(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def outcomes_by_uuid(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    samples: list[dict[str, Any]] = report["samples"]
    by_uuid = {s["sample_uuid"]: s for s in samples}
    assert len(by_uuid) == len(samples), "a sample appears twice in the report"
    return by_uuid


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every 10 ms; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def requests_matching(
    emulator: Emulator, method: str, path_prefix: str, *, fault: str | None = None
) -> list[RequestRecord]:
    return [
        r
        for r in emulator.requests
        if r.method == method
        and r.path.startswith(path_prefix)
        and (fault is None or r.fault == fault)
    ]


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def url_path(url: str) -> str:
    """``http://host:port/s3/assets/x.png`` -> ``/s3/assets/x.png``."""
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


@dataclass
class WorkerRun:
    """What one run left: its summary (None when it raised), error, report, model loads."""

    summary: RunSummary | None
    error: BaseException | None
    report: dict[str, Any]
    loads: int

    @property
    def outcomes(self) -> dict[str, dict[str, Any]]:
        return outcomes_by_uuid(self.report)


def run_worker(
    emulator: Emulator,
    tmp_path: Path,
    pipeline: Predictor,
    dataset: str,
    *,
    settings: Settings | None = None,
    state_dir: str = "state",
    output_dir: str = "out",
    should_stop: Callable[[], bool] | None = None,
    reraise: bool = True,
    **options: Any,
) -> WorkerRun:
    """One ``prelabel run`` minus the CLI: connect, check, ``DatasetWorker.run()``, close.

    The run goes in a thread: one that outlives :data:`DEADLOCK_S` fails the test as a
    deadlock. An error of the run is raised (``reraise``) or returned in ``error``; either way
    the report is read back (it is closed, valid JSON, whether the run finished or stopped).
    """
    settings = settings or make_settings(emulator.url)
    loads = 0

    def load() -> Predictor:
        nonlocal loads
        loads += 1
        return pipeline

    api = SegmentsApi.connect(EMULATOR_API_KEY, settings.remote)
    state = StateStore.in_dir(tmp_path / state_dir)
    box: dict[str, Any] = {}
    try:
        opts = RunOptions(dataset=dataset, output_dir=tmp_path / output_dir, **options)
        _, taxonomy = check_dataset(api, settings, opts.dataset, opts.labelset)
        worker = DatasetWorker(SampleSteps(api, settings, opts, taxonomy, load), state)

        def target() -> None:
            try:
                box["summary"] = worker.run(should_stop=should_stop)
            except BaseException as exc:
                box["error"] = exc

        thread = threading.Thread(target=target, name="test-worker", daemon=True)
        thread.start()
        thread.join(DEADLOCK_S)
        assert not thread.is_alive(), f"the worker still runs after {DEADLOCK_S} s: deadlock"
    finally:
        state.close()
        api.close()
    if reraise and "error" in box:
        raise box["error"]
    report = read_report(tmp_path / output_dir / "report.json")
    return WorkerRun(box.get("summary"), box.get("error"), report, loads)


def state_record(
    tmp_path: Path,
    dataset: str,
    uuid: str,
    *,
    state_dir: str = "state",
    labelset: str = "ground-truth",
) -> SampleRecord | None:
    """The resume record a run left in ``tmp_path/state_dir`` for one sample."""
    store = StateStore.in_dir(tmp_path / state_dir)
    try:
        return store.get(dataset, labelset, uuid)
    finally:
        store.close()


def state_stage(tmp_path: Path, dataset: str, uuid: str) -> str | None:
    record = state_record(tmp_path, dataset, uuid)
    return None if record is None else record.stage
