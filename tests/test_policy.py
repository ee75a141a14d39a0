"""Each policy stated once (issue 21): the table of errors that end a run or a loop, the
parking rule, the one write rule, the stop on the first samples failing alike in the model.

The run tests go through the real worker (``DatasetWorker``) against the emulator; the
pipelines here are stand-ins for the model only (what the policy reacts to is the model's
error), never for the code under test.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from prelabel.cli._common import UsageFailure, usage_errors
from prelabel.cli.serve import _exit_on
from prelabel.config import WorkerSettings
from prelabel.emulator import Emulator
from prelabel.errors import (
    AuthError,
    ConfigError,
    ImageError,
    ModelLoadError,
    NotFoundRemoteError,
    PrelabelError,
    RemoteError,
    StorageError,
    TransientRemoteError,
)
from prelabel.panoptic import PanopticPrediction
from prelabel.run.outcome import SampleOutcome
from prelabel.run.policy import (
    ERROR_TABLE,
    SameModelError,
    SameModelErrorStop,
    ends_loop,
    ends_run,
    failure_of,
    parks,
)
from prelabel.run.report import RunSummary
from prelabel.segments.client import SampleRef
from prelabel.segments.statuses import may_write
from prelabel.serve.dedup import DeliveryLog
from prelabel.serve.metrics import Metrics
from prelabel.serve.service import ServeConfig, Service
from prelabel.serve.webhooks import SampleTask, SignatureVerifier
from prelabel.taxonomy import Taxonomy
from tests.connector_helpers import make_settings, run_worker
from tests.fixtures.emulator import DEMO_CATEGORIES, png_bytes
from tests.serve_helpers import new_secret

# The table ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "run", "loop"),
    [
        (AuthError("key refused"), True, True),
        (ModelLoadError("no weights"), True, True),
        (SameModelError("every sample fails"), True, True),
        (ConfigError("bad category"), False, True),
        (NotFoundRemoteError("dataset jane/x not found"), False, True),
        (TransientRemoteError("503"), False, False),
        (RemoteError("400 bad request"), False, False),
        (ImageError("not an image"), False, False),
        (StorageError("bucket refused"), False, False),
        (KeyError("a bug"), False, False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_one_table_says_what_ends_a_run_and_what_ends_a_loop(
    error: Exception, run: bool, loop: bool
) -> None:
    assert (ends_run(error), ends_loop(error)) == (run, loop)


def test_whatever_ends_a_run_ends_a_loop() -> None:
    assert all(ends.loop for _, ends in ERROR_TABLE if ends.run)


def test_a_run_wide_error_is_raised_by_the_policy_never_recorded_per_sample() -> None:
    sample = SampleRef(uuid="u1", name="a.png", image_url="http://x/a.png", label_status=None)
    with pytest.raises(AuthError):
        failure_of(AuthError("key refused"), sample)
    failure = failure_of(ConfigError("category x has no prompt"), sample)
    assert failure.reason == "category x has no prompt" and not failure.transient


# Parking and the write rule -------------------------------------------------------------------


def test_a_sample_is_parked_at_max_attempts() -> None:
    assert [parks(n, max_attempts=2) for n in range(4)] == [False, False, True, True]


@pytest.mark.parametrize(
    ("status", "overwrite", "expected"),
    [
        (None, False, True),
        (None, True, True),
        ("PRELABELED", False, False),
        ("PRELABELED", True, True),
        ("LABELED", True, False),
        ("REVIEWED", True, False),
        ("SKIPPED", True, False),
        ("LABELING", True, False),
    ],
)
def test_may_write_only_over_no_label_or_a_prelabel_when_asked(
    status: str | None, overwrite: bool, expected: bool
) -> None:
    assert may_write(status, overwrite=overwrite) is expected


# The first samples failing alike in the model -------------------------------------------------


def _failed(name: str, reason: str) -> SampleOutcome:
    return SampleOutcome(name, name, "failed", reason=reason)


def test_the_same_model_error_on_the_first_samples_stops_with_it_named() -> None:
    stop = SameModelErrorStop(limit=3)
    stop.observe(_failed("a", "IndexError: 77"), model_error=True)
    stop.observe(_failed("b", "IndexError: 77"), model_error=True)
    with pytest.raises(SameModelError, match=r"first 3 samples .* IndexError: 77$"):
        stop.observe(_failed("c", "IndexError: 77"), model_error=True)


@pytest.mark.parametrize(
    "second",
    [
        _failed("b", "ValueError: other"),  # another model error
        SampleOutcome("b", "b", "labeled"),  # a success
    ],
    ids=["different-error", "success"],
)
def test_a_success_or_a_different_error_among_the_first_samples_settles_it(
    second: SampleOutcome, caplog: pytest.LogCaptureFixture
) -> None:
    stop = SameModelErrorStop(limit=3)
    with caplog.at_level(logging.ERROR, logger="prelabel.run.policy"):
        stop.observe(_failed("a", "IndexError: 77"), model_error=True)
        assert caplog.records == []  # held back while the pattern may hold
        stop.observe(second, model_error=second.result == "failed")
        for name in "cdef":
            stop.observe(_failed(name, "IndexError: 77"), model_error=True)
    logged = [r.getMessage() for r in caplog.records]
    assert sum("IndexError: 77" in m for m in logged) == 5  # each sample, once


def test_data_errors_never_count_as_the_models() -> None:
    stop = SameModelErrorStop(limit=2)
    for name in "abcd":
        stop.observe(_failed(name, "not a recognised image format"), model_error=False)


class _BrokenModel:
    """The model fails on every image alike, as CLIPSeg does on a prompt over its text limit."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def predict(self, image: Image.Image, taxonomy: Taxonomy) -> PanopticPrediction:
        with self._lock:
            self.calls += 1
        raise RuntimeError("The size of tensor a (80) must match the size of tensor b (77)")


def _dataset(emulator: Emulator, name: str, images: list[bytes]) -> str:
    full = f"jane/{name}"
    emulator.create_dataset(full, categories=[dict(c) for c in DEMO_CATEGORIES])
    samples = [
        {"name": f"s{i}.png", "attributes": {"image": {"url": emulator.add_asset(data, f"{i}")}}}
        for i, data in enumerate(images)
    ]
    emulator.add_samples(full, samples)
    return full


@pytest.mark.parametrize("engine", ["sequential", "overlapped"])
def test_a_run_whose_first_samples_all_fail_alike_in_the_model_stops_naming_it_once(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture, engine: str
) -> None:
    dataset = _dataset(emulator, f"broken-{engine}", [png_bytes(24, 16, i) for i in range(12)])
    settings = make_settings(emulator.url).model_copy(
        update={"worker": WorkerSettings(engine=engine)}
    )
    model = _BrokenModel()

    with caplog.at_level(logging.DEBUG, logger="prelabel"):
        run = run_worker(emulator, tmp_path, model, dataset, settings=settings, reraise=False)

    assert isinstance(run.error, SameModelError)
    assert "tensor b (77)" in str(run.error)
    assert isinstance(run.error, PrelabelError)  # the CLI's one line and exit code 2
    assert model.calls < 12, "the run went on paying the model for every sample"
    loud = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert not any("tensor b (77)" in r.getMessage() for r in loud)
    assert not any(r.exc_info for r in loud), "no traceback unless asked for (-v)"
    assert any(r.exc_info for r in caplog.records if r.levelno == logging.DEBUG)


def test_samples_that_fail_on_their_own_data_never_stop_the_run(
    emulator: Emulator, tmp_path: Path
) -> None:
    dataset = _dataset(emulator, "undecodable", [b"this is not an image"] * 5)

    run = run_worker(emulator, tmp_path, _BrokenModel(), dataset, reraise=False)

    assert run.error is None
    assert [o["result"] for o in run.outcomes.values()] == ["failed"] * 5
    assert run.report["version"] == 1 and run.report["dataset"] == dataset


# The loops: sync's is pinned in test_sync.py; serve's webhook worker and its exit here ----------


class _RefusingLifecycle:
    """Serve's seam (:class:`prelabel.serve.lifecycle.Lifecycle`) with an API that refuses the
    key once webhook work starts; the service under test is real."""

    def __init__(self, error: PrelabelError) -> None:
        self.error = error
        self.batches = 0

    def prepare(self, dataset: str) -> None:
        pass

    def load_models(self) -> None:
        pass

    def check_api(self) -> None:
        pass

    def label_samples(self, dataset: str, sample_uuids: Any, should_stop: Any) -> None:
        self.batches += 1
        raise self.error

    def run_cycle(self, dataset: str, should_stop: Any) -> RunSummary:
        return RunSummary()

    def ends_loop(self, exc: BaseException) -> bool:
        return ends_loop(exc)  # the policy under test, as the adapter asks it

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "error",
    [AuthError("not authorised: invalid API key"), ConfigError("no such category")],
    ids=lambda e: type(e).__name__,
)
def test_the_webhook_worker_stops_the_service_on_a_refused_key_or_bad_config_without_backoff(
    tmp_path: Path, error: PrelabelError
) -> None:
    lifecycle = _RefusingLifecycle(error)
    deliveries = DeliveryLog(tmp_path / "deliveries.sqlite")
    service = Service(
        lifecycle,
        ServeConfig(datasets=("jane/d",), interval_s=3600.0, probe_interval_s=0.2),
        verifier=SignatureVerifier(new_secret()),
        deliveries=deliveries,
        metrics=Metrics(),
    )
    try:
        service.start()
        start = time.monotonic()
        assert service.queue.offer(SampleTask("jane/d", "u1", "sample.created", "msg_1"))
        assert service.wait_drained(timeout=3), "the service backed off instead of stopping"
        assert time.monotonic() - start < 3
    finally:
        service.begin_drain()
        service.wait_drained(timeout=10)
        deliveries.close()
    assert lifecycle.batches == 1
    assert service.fatal is error


def test_serve_stopped_on_a_refused_key_exits_like_run() -> None:
    error = AuthError("not authorised: invalid API key")
    with pytest.raises(UsageFailure) as from_run, usage_errors():
        raise error
    with pytest.raises(UsageFailure) as from_serve:
        _exit_on(error)
    assert from_serve.value.exit_code == from_run.value.exit_code == 2
    assert from_serve.value.format_message() == from_run.value.format_message()
