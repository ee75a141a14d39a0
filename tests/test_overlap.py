"""The overlapped engine: bounded memory, any write order, the connector's rules, no deadlock.

Two layers:

- :func:`prelabel.run.overlapped.run_overlapped` driven by a small deterministic fake of the
  worker's steps (sleeps create pressure, counters under a lock observe it). This pins down the
  scheduling itself: every sample recorded once, at most ``prefetch`` samples queued ahead of
  inference and ``deliver_queue`` deliveries in flight, inference and ``record`` on the calling
  thread, a run-wide error in any stage raised promptly with the deliveries in flight finished
  and recorded, ``should_stop`` abandoning prefetched samples. The real steps are tested through
  the worker below and in ``tests/test_worker.py``.
- :class:`~prelabel.run.dataset.DatasetWorker` with ``engine="overlapped"``, tiny models and the
  emulator, with faults injected in each stage (image downloads, decoding, the model, asset
  creation, the presigned upload, the label write): the run finishes, good samples are labeled
  exactly once, bad ones fail alone with a reason; a person's label is never written over; a
  run stopped by an error or by ``should_stop`` is resumed with every label written once.

Every run happens in a thread joined with a timeout, so a deadlock fails the test instead of
hanging the suite.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from segments import SegmentsClient

from prelabel.backends.grounded_sam.backend import GroundedSam
from prelabel.backends.grounded_sam.loading import LoadedModels
from prelabel.config import PipelineSettings, Settings, WorkerSettings
from prelabel.emulator import Emulator, FaultRule
from prelabel.errors import RemoteError
from prelabel.panoptic import PanopticPrediction
from prelabel.pipeline.pipeline import Pipeline
from prelabel.run.job import Job
from prelabel.run.outcome import SampleOutcome
from prelabel.run.overlapped import run_overlapped
from prelabel.segments.client import SampleRef
from prelabel.state import FAILED, LABELED
from prelabel.taxonomy import Taxonomy
from tests.connector_helpers import (
    LABELING_PIPELINE,
    assert_valid_prelabel,
    human_attributes,
    make_settings,
    requests_matching,
    run_worker,
    state_stage,
    url_path,
    wait_for,
)
from tests.fixtures.emulator import DEMO_CATEGORIES, png_bytes

GT = "ground-truth"
CATEGORY_IDS = [c["id"] for c in DEMO_CATEGORIES]


class RunWide(Exception):
    """What a step raises for a problem that would fail every sample (key refused, ...)."""


# --- orchestration with fake steps ---------------------------------------------------------------


def sample(i: int) -> SampleRef:
    return SampleRef(uuid=f"uuid-{i:04d}", name=f"s{i}", image_url=None, label_status=None)


def index(job: Job) -> int:
    return int(job.sample.name[1:])


@dataclass
class FakeSteps:
    """The four steps with sleeps and instrumentation; ``fail_*`` raise :class:`RunWide`."""

    fetch_s: float = 0.0
    infer_s: float = 0.0
    deliver_s: float | Callable[[int], float] = 0.0
    fail_fetch: int | None = None
    fail_infer: int | None = None
    fail_deliver: int | None = None

    lock: threading.Lock = field(default_factory=threading.Lock)
    begun: set[int] = field(default_factory=set)
    inferring: set[int] = field(default_factory=set)  # infer entered (or being entered)
    inferred: list[int] = field(default_factory=list)  # infer returned
    deliver_started: list[int] = field(default_factory=list)
    delivered: list[int] = field(default_factory=list)  # deliver returned an outcome
    in_flight: int = 0
    # Maxima observed.
    max_ahead: int = 0  # begun, infer not entered, at any begin
    max_queued_while_inferring: int = 0  # the same, excluding the batch being inferred
    max_in_flight: int = 0
    max_predictions: int = 0  # inferred, deliver not returned
    max_infer_concurrency: int = 0
    infer_concurrency: int = 0
    max_batch: int = 0
    in_flight_at_failure: int | None = None
    infer_threads: set[int] = field(default_factory=set)
    stage_threads: dict[str, set[str]] = field(default_factory=dict)
    #: What the run's recorder would do with each outcome (set by ``run_guarded``).
    on_record: Callable[[SampleOutcome], None] = lambda outcome: None

    def _thread(self, stage: str) -> None:
        self.stage_threads.setdefault(stage, set()).add(threading.current_thread().name)

    def begin(self, s: SampleRef) -> Job:
        i = int(s.name[1:])
        with self.lock:
            self._thread("begin")
            self.begun.add(i)
            self.max_ahead = max(self.max_ahead, len(self.begun - self.inferring))
        return Job(s)

    def fetch(self, job: Job) -> Job:
        with self.lock:
            self._thread("fetch")
        time.sleep(self.fetch_s)
        if index(job) == self.fail_fetch:
            raise RunWide(f"fetch {index(job)}")
        return job

    def infer(self, jobs: list[Job]) -> list[Job]:
        ids = [index(j) for j in jobs]
        with self.lock:
            self.infer_threads.add(threading.get_ident())
            self.inferring.update(ids)
            self.max_batch = max(self.max_batch, len(ids))
            queued = len(self.begun - self.inferring)
            self.max_queued_while_inferring = max(self.max_queued_while_inferring, queued)
            self.infer_concurrency += 1
            self.max_infer_concurrency = max(self.max_infer_concurrency, self.infer_concurrency)
        try:
            time.sleep(self.infer_s)
            with self.lock:  # the fetches submitted before this batch have begun by now
                queued = len(self.begun - self.inferring)
                self.max_queued_while_inferring = max(self.max_queued_while_inferring, queued)
            if self.fail_infer in ids:
                with self.lock:
                    self.in_flight_at_failure = self.in_flight
                raise RunWide(f"infer {self.fail_infer}")
        finally:
            with self.lock:
                self.infer_concurrency -= 1
        with self.lock:
            self.inferred.extend(ids)
            waiting = len(set(self.inferred) - set(self.delivered))
            self.max_predictions = max(self.max_predictions, waiting)
        return jobs

    def deliver(self, job: Job) -> Job:
        i = index(job)
        with self.lock:
            self._thread("deliver")
            self.deliver_started.append(i)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            delay = self.deliver_s(i) if callable(self.deliver_s) else self.deliver_s
            time.sleep(delay)
            if i == self.fail_deliver:
                with self.lock:
                    self.in_flight_at_failure = self.in_flight - 1
                raise RunWide(f"deliver {i}")
        finally:
            with self.lock:
                self.in_flight -= 1
        with self.lock:
            self.delivered.append(i)
        job.finish("labeled")
        return job

    def record(self, job: Job) -> None:
        assert job.outcome is not None
        self.on_record(job.outcome)


@dataclass
class Outcome:
    recorded: list[int]
    record_threads: set[int]
    caller: int
    error: BaseException | None
    seconds: float


def pools(**values: Any) -> WorkerSettings:
    base: dict[str, Any] = {
        "fetch_workers": 2,
        "prefetch": 3,
        "deliver_workers": 2,
        "deliver_queue": 2,
    }
    return WorkerSettings(**{**base, **values})


def prelabel_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("prelabel-")}


def run_guarded(
    steps: FakeSteps,
    samples: Iterable[SampleRef],
    worker: WorkerSettings,
    should_stop: Callable[[], bool] = lambda: False,
    timeout: float = 20.0,
    after_record: Callable[[list[int]], None] = lambda recorded: None,
) -> Outcome:
    """``run_overlapped`` in a thread; a run that outlives ``timeout`` fails as a deadlock.
    ``after_record`` is called with the samples recorded so far after each one."""
    recorded: list[int] = []
    record_threads: set[int] = set()
    box: dict[str, Any] = {}
    before = prelabel_threads()

    def record(outcome: SampleOutcome) -> None:
        record_threads.add(threading.get_ident())
        recorded.append(int(outcome.sample_name[1:]))
        after_record(recorded)

    def target() -> None:
        box["caller"] = threading.get_ident()
        try:
            steps.on_record = record
            run_overlapped(steps, samples, worker, should_stop)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="test-caller", daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(timeout)
    seconds = time.monotonic() - started
    assert not thread.is_alive(), f"run_overlapped still running after {timeout} s: deadlock"
    # Both pools were shut down: no stage thread outlives the run.
    assert prelabel_threads() - before == set()
    return Outcome(recorded, record_threads, box["caller"], box.get("error"), seconds)


@pytest.mark.parametrize(
    "worker",
    [
        pools(),
        pools(fetch_workers=1, prefetch=1, deliver_workers=1, deliver_queue=1),
        pools(fetch_workers=4, prefetch=2, deliver_workers=4, deliver_queue=2),
        pools(fetch_workers=3, prefetch=5, deliver_workers=3, deliver_queue=3, batch_size=2),
    ],
    ids=["default", "all-ones", "more-threads-than-slots", "batch-2"],
)
def test_every_sample_is_recorded_once_within_the_bounds(worker: WorkerSettings) -> None:
    n = 40
    # Fast fetch and slow delivery around the model: both queues fill up.
    steps = FakeSteps(fetch_s=0.001, infer_s=0.01, deliver_s=lambda i: 0.01 + 0.01 * (i % 3))

    out = run_guarded(steps, [sample(i) for i in range(n)], worker)

    assert out.error is None
    assert Counter(out.recorded) == Counter(range(n))
    assert sorted(steps.delivered) == list(range(n))
    assert steps.inferred == list(range(n))  # inference keeps the listing order
    # Memory: ``prefetch`` samples queued while the model works, plus the batch it holds.
    assert steps.max_queued_while_inferring <= worker.prefetch
    assert steps.max_queued_while_inferring == worker.prefetch  # the bound was reached
    assert steps.max_ahead <= worker.prefetch + worker.batch_size
    assert steps.max_batch <= worker.batch_size
    # At most deliver_queue deliveries at once (also when there are more threads than that),
    # and at most deliver_queue predictions waiting besides the batch just predicted.
    assert steps.max_in_flight == min(worker.deliver_queue, worker.deliver_workers)
    assert steps.max_predictions <= worker.deliver_queue + worker.batch_size
    # One model, one thread: the caller's; and outcomes are recorded there too.
    assert steps.infer_threads == {out.caller}
    assert steps.max_infer_concurrency == 1
    assert out.record_threads == {out.caller}
    assert all(name.startswith("prelabel-fetch") for name in steps.stage_threads["begin"])
    assert all(name.startswith("prelabel-fetch") for name in steps.stage_threads["fetch"])
    assert all(name.startswith("prelabel-deliver") for name in steps.stage_threads["deliver"])


def test_outcomes_are_recorded_in_completion_order() -> None:
    # Sample 0's delivery is slow: later samples are written and recorded before it.
    steps = FakeSteps(deliver_s=lambda i: 0.3 if i == 0 else 0.0)

    out = run_guarded(steps, [sample(i) for i in range(6)], pools(deliver_queue=3))

    assert out.error is None and sorted(out.recorded) == list(range(6))
    assert out.recorded.index(0) > out.recorded.index(1)


def test_a_lazy_listing_is_read_only_prefetch_ahead_of_the_model() -> None:
    n = 500
    yielded = 0

    def listing() -> Iterator[SampleRef]:
        nonlocal yielded
        for i in range(n):
            yielded += 1
            yield sample(i)

    ahead: list[int] = []

    class Watching(FakeSteps):
        def infer(self, jobs: list[Job]) -> list[Job]:
            ahead.append(yielded - (index(jobs[-1]) + 1))
            return super().infer(jobs)

    worker = pools(prefetch=4)
    steps = Watching()

    out = run_guarded(steps, listing(), worker)

    assert out.error is None and sorted(out.recorded) == list(range(n))
    # Whatever the dataset size, the listing is consumed at most ``prefetch`` samples ahead of
    # the one being predicted: memory does not grow with the count.
    assert max(ahead) == worker.prefetch


def test_an_empty_listing_returns_at_once() -> None:
    steps = FakeSteps()

    out = run_guarded(steps, [], pools(), timeout=5)

    assert out.error is None and out.recorded == [] and steps.begun == set()


@pytest.mark.parametrize("stage", ["fetch", "infer", "deliver"])
def test_a_run_wide_error_in_any_stage_is_raised_promptly(stage: str) -> None:
    n, k = 100, 6
    # Deliveries are much slower than inference, so some are in flight when the error comes.
    steps = FakeSteps(fetch_s=0.005, infer_s=0.01, deliver_s=0.15, **{f"fail_{stage}": k})
    worker = pools(fetch_workers=2, prefetch=3, deliver_workers=3, deliver_queue=3)

    out = run_guarded(steps, [sample(i) for i in range(n)], worker)

    assert isinstance(out.error, RunWide) and str(out.error) == f"{stage} {k}"
    # Promptly: the whole run would take over 5 s (100 deliveries of 0.15 s, 3 at a time).
    assert out.seconds < 2.5, out.seconds
    # Deliveries already running were finished, not cut off, and every one that completed
    # was recorded, once; the failing one was not.
    assert len(steps.deliver_started) == len(steps.delivered) + (stage == "deliver")
    assert Counter(out.recorded) == Counter(steps.delivered)
    assert k not in out.recorded
    # Nothing past the failure was predicted or delivered.
    if stage in {"fetch", "infer"}:
        assert max(steps.deliver_started) < k
        assert max(steps.inferred) < k
    if stage in {"infer", "deliver"}:
        assert steps.in_flight_at_failure is not None and steps.in_flight_at_failure >= 1
    # The fetch pool stopped: it did not go on down the listing.
    assert max(steps.begun) <= max(steps.inferred, default=0) + worker.prefetch + 1


def test_an_error_while_recording_is_raised_with_deliveries_finished() -> None:
    steps = FakeSteps(infer_s=0.01, deliver_s=0.1)

    def after_record(recorded: list[int]) -> None:
        if len(recorded) == 3:  # as the worker's record does after 3 transient failures
            raise RunWide("server down")

    out = run_guarded(steps, [sample(i) for i in range(50)], pools(), after_record=after_record)

    assert isinstance(out.error, RunWide)
    assert len(steps.deliver_started) == len(steps.delivered) < 50
    # The outcome whose recording raised counts as recorded; the deliveries in flight then
    # were finished and recorded too.
    assert sorted(out.recorded) == sorted(steps.delivered)


def test_should_stop_abandons_prefetched_samples_and_finishes_deliveries() -> None:
    stop_after = 5
    steps = FakeSteps(fetch_s=0.001, infer_s=0.02, deliver_s=0.2)
    worker = pools(prefetch=4, deliver_workers=3, deliver_queue=3)

    out = run_guarded(
        steps, [sample(i) for i in range(50)], worker, lambda: len(steps.inferred) >= stop_after
    )

    assert out.error is None
    assert steps.inferred == list(range(stop_after))
    # Samples fetched ahead were abandoned: never delivered, never recorded.
    abandoned = steps.begun - set(steps.inferred)
    assert abandoned and abandoned.isdisjoint(steps.deliver_started)
    # The deliveries in flight when the stop came were finished and recorded.
    assert sorted(steps.delivered) == list(range(stop_after))
    assert sorted(out.recorded) == list(range(stop_after))


# --- the real worker, overlapped, against the emulator -----------------------------------------


OVERLAPPED = WorkerSettings(
    engine="overlapped", fetch_workers=2, prefetch=4, deliver_workers=2, deliver_queue=2
)


def overlapped_settings(url: str, **remote: Any) -> Settings:
    return make_settings(url, **remote).model_copy(update={"worker": OVERLAPPED})


class FaultyPipeline(Pipeline):
    """The real pipeline, with ``before(n)`` called before the n-th prediction (0-based), and a
    crash of the model on images of size ``crash_size``."""

    def __init__(
        self,
        models: GroundedSam,
        settings: PipelineSettings,
        before: Callable[[int], None] = lambda n: None,
        crash_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(models, settings)
        self._before = before
        self._crash_size = crash_size
        self.calls = 0

    def predict(self, image: Image.Image, taxonomy: Taxonomy, **kwargs: Any) -> PanopticPrediction:
        n = self.calls
        self.calls += 1
        self._before(n)
        if image.size == self._crash_size:
            raise RuntimeError("the model crashed on this image")
        return super().predict(image, taxonomy, **kwargs)


def add_dataset(
    emulator: Emulator, name: str, images: dict[str, bytes], urls: dict[str, str] | None = None
) -> dict[str, str]:
    """``jane/<name>`` with one sample per image; returns sample name -> uuid, and fills
    ``urls`` with sample name -> image URL."""
    emulator.create_dataset(f"jane/{name}", categories=list(DEMO_CATEGORIES))
    added = {n: emulator.add_asset(data, n) for n, data in images.items()}
    if urls is not None:
        urls.update(added)
    samples = [{"name": n, "attributes": {"image": {"url": url}}} for n, url in added.items()]
    uuids = emulator.add_samples(f"jane/{name}", samples)
    return dict(zip(images, uuids, strict=True))


def assert_labeled_once(
    emulator: Emulator, client: SegmentsClient, uuids: Iterable[str], size: tuple[int, int]
) -> None:
    for uuid in uuids:
        assert emulator.label_write_count(uuid) == 1, uuid
        assert_valid_prelabel(client, uuid, image_size=size, category_ids=CATEGORY_IDS)


@pytest.mark.slow
def test_faults_in_every_stage_fail_only_their_samples(
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models: LoadedModels,
    tmp_path: Path,
) -> None:
    good = png_bytes(32, 24, seed=0)
    urls: dict[str, str] = {}
    by_name = add_dataset(
        emulator,
        "faults",
        {
            "good_0.png": good,
            "download_500.png": png_bytes(32, 24, seed=1),
            "good_1.png": png_bytes(32, 24, seed=2),
            "download_hangs.png": png_bytes(32, 24, seed=3),
            "corrupt.png": good[: len(good) // 2],
            "model_crash.png": png_bytes(40, 30, seed=4),
            "good_2.png": png_bytes(32, 24, seed=5),
            "good_3.png": png_bytes(32, 24, seed=6),
        },
        urls,
    )
    # 4 attempts: one sample's upload may meet all 3 injected upload faults and still succeed.
    settings = overlapped_settings(emulator.url, read_timeout_s=0.5, retry_attempts=4)
    pipeline = FaultyPipeline(GroundedSam(tiny_models), LABELING_PIPELINE, crash_size=(40, 30))
    emulator.set_faults(
        [
            # fetch: one image answers 500 every time, one never answers at all
            FaultRule(path=url_path(urls["download_500.png"]), error_rate=1.0),
            FaultRule(path=url_path(urls["download_hangs.png"]), hang_rate=1.0, hang_s=5.0),
            # deliver: transient failures of asset creation, upload and label write, retried
            FaultRule(path="/assets/", method="POST", error_rate=1.0, times=2),
            FaultRule(path="/s3-upload/", method="POST", error_rate=1.0, times=1),
            FaultRule(path="/labels/*", method="PUT", error_rate=1.0, times=2),
        ]
    )

    result = run_worker(
        emulator, tmp_path, pipeline, "jane/faults", settings=settings, reraise=False
    )

    faulted = Counter((r.method, r.path.split("/")[1], r.fault) for r in emulator.requests)
    emulator.clear_faults()
    assert result.error is None
    assert faulted[("GET", "s3", "error")] == 4  # every attempt of the 500 image
    assert faulted[("GET", "s3", "hang")] == 4
    assert faulted[("POST", "assets", "error")] == 2
    assert faulted[("POST", "s3-upload", "error")] == 1
    assert faulted[("PUT", "labels", "error")] == 2
    outcomes = result.outcomes
    assert set(outcomes) == set(by_name.values())
    expected_failures = {
        "download_500.png": "image download failed",
        "download_hangs.png": "image download failed",
        "corrupt.png": "cannot decode image",
        "model_crash.png": "RuntimeError: the model crashed",
    }
    for name, fragment in expected_failures.items():
        outcome = outcomes[by_name[name]]
        assert outcome["result"] == "failed", (name, outcome)
        assert fragment in outcome["reason"], (name, outcome["reason"])
        assert emulator.get_label(by_name[name]) is None
        assert state_stage(tmp_path, "jane/faults", by_name[name]) == FAILED
    good_uuids = [by_name[f"good_{i}.png"] for i in range(4)]
    for uuid in good_uuids:
        assert outcomes[uuid]["result"] == "labeled"
        assert state_stage(tmp_path, "jane/faults", uuid) == LABELED
    assert_labeled_once(emulator, segments_client, good_uuids, (32, 24))
    assert result.report["summary"]["counts"] == {"labeled": 4, "failed": 4}


def test_labels_a_person_saves_during_an_overlapped_run_are_left_alone(
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models: LoadedModels,
    tmp_path: Path,
) -> None:
    names = [f"image_{i}.png" for i in range(6)]
    by_name = add_dataset(
        emulator, "race", {n: png_bytes(32, 24, seed=i) for i, n in enumerate(names)}
    )
    u = [by_name[n] for n in names]
    human = human_attributes(segments_client, (32, 24))
    emulator.clear_requests()

    def person(n: int) -> None:
        if n != 0:
            return
        # While the model works on sample 0, samples 1-4 are prefetched: their label was read
        # (no label yet) before the person saves one on sample 3. Sample 0 is labeled during
        # its own prediction; sample 5 is set SKIPPED before its turn comes.
        wait_for(
            lambda: bool(requests_matching(emulator, "GET", f"/labels/{u[3]}/")), 10, "prefetch"
        )
        emulator.write_label(u[0], GT, human, label_status="LABELED")
        emulator.write_label(u[3], GT, human, label_status="LABELED")
        emulator.set_label_status(u[5], GT, "SKIPPED")

    pipeline = FaultyPipeline(GroundedSam(tiny_models), LABELING_PIPELINE, before=person)

    result = run_worker(
        emulator,
        tmp_path,
        pipeline,
        "jane/race",
        settings=overlapped_settings(emulator.url),
        reraise=False,
    )

    assert result.error is None
    outcomes = result.outcomes
    for uuid, status in ((u[0], "LABELED"), (u[3], "LABELED"), (u[5], "SKIPPED")):
        label = emulator.get_label(uuid)
        assert label is not None and label["label_status"] == status
        assert label["updated_by"] == "human-annotator"
        assert emulator.label_write_count(uuid) == 0
        assert outcomes[uuid]["result"] == "skipped"
        assert status in outcomes[uuid]["reason"]
    assert requests_matching(emulator, "PUT", f"/labels/{u[3]}/") == []
    assert_labeled_once(emulator, segments_client, [u[1], u[2], u[4]], (32, 24))
    assert result.report["summary"]["counts"] == {"labeled": 3, "skipped": 3}


@pytest.mark.slow
def test_a_run_stopped_by_the_server_resumes_and_writes_every_label_once(
    emulator: Emulator,
    segments_client: SegmentsClient,
    pipeline: Pipeline,
    tmp_path: Path,
) -> None:
    n = 8
    by_name = add_dataset(
        emulator, "resume", {f"image_{i}.png": png_bytes(32, 24, seed=i) for i in range(n)}
    )
    seeded_assets = emulator.asset_upload_count()
    # Every label write fails: after 3 samples in a row fail, the run stops.
    emulator.set_faults([FaultRule(path="/labels/*", method="PUT", error_rate=1.0)])

    first = run_worker(
        emulator,
        tmp_path,
        pipeline,
        "jane/resume",
        settings=overlapped_settings(emulator.url, retry_attempts=2),
        reraise=False,
    )

    assert isinstance(first.error, RemoteError) and "in a row" in str(first.error)
    assert 3 <= len(first.outcomes) < n
    assert {o["result"] for o in first.outcomes.values()} == {"failed"}
    assert emulator.label_write_counts() == {}
    # The failed samples keep their uploaded bitmap for the next run.
    assert {state_stage(tmp_path, "jane/resume", u) for u in first.outcomes} == {"uploaded"}

    emulator.clear_faults()
    second = run_worker(
        emulator,
        tmp_path,
        pipeline,
        "jane/resume",
        settings=overlapped_settings(emulator.url),
        output_dir="out2",
        reraise=False,
    )

    assert second.error is None
    assert set(second.outcomes) == set(by_name.values())
    assert {o["result"] for o in second.outcomes.values()} == {"labeled"}
    assert_labeled_once(emulator, segments_client, by_name.values(), (32, 24))
    # One bitmap per sample over both runs: the first run's uploads were reused.
    assert emulator.asset_upload_count() - seeded_assets == n


def test_a_stopped_run_abandons_prefetched_samples_and_the_next_run_labels_them_once(
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models: LoadedModels,
    tmp_path: Path,
) -> None:
    n = 6
    by_name = add_dataset(
        emulator, "stop", {f"image_{i}.png": png_bytes(32, 24, seed=i) for i in range(n)}
    )
    u = list(by_name.values())
    pipeline = FaultyPipeline(GroundedSam(tiny_models), LABELING_PIPELINE)
    settings = overlapped_settings(emulator.url)

    first = run_worker(
        emulator,
        tmp_path,
        pipeline,
        "jane/stop",
        settings=settings,
        should_stop=lambda: pipeline.calls >= 2,
        reraise=False,
    )

    assert first.error is None
    assert set(first.outcomes) == set(u[:2])  # delivered, not cut off
    assert {o["result"] for o in first.outcomes.values()} == {"labeled"}
    for uuid in u[2:]:  # prefetched (up to 4 ahead), abandoned: nothing written or recorded
        assert emulator.get_label(uuid) is None
        assert state_stage(tmp_path, "jane/stop", uuid) is None

    second = run_worker(
        emulator,
        tmp_path,
        pipeline,
        "jane/stop",
        settings=settings,
        output_dir="out2",
        reraise=False,
    )

    assert second.error is None
    assert set(second.outcomes) == set(u[2:])
    assert_labeled_once(emulator, segments_client, u, (32, 24))
