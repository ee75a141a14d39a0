"""Serve's :class:`~prelabel.serve.lifecycle.Lifecycle` over today's worker.

The only module of :mod:`prelabel.serve` that knows :class:`~prelabel.worker.DatasetWorker`.
A webhook batch is a worker run whose selection is the stream of uuids from the queue (each
re-read through the SDK); a cycle is exactly ``prelabel run``'s. Both report each outcome to
the observer from ``deliver``, the one step every sample passes, in the sequential and the
overlapped engine alike.

Models load once for every thread, and inference is serialised on them: webhook batches and
cycles may run at once, and one model on one device gains nothing from two concurrent calls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from prelabel.config import Settings
from prelabel.progress import NullProgress, Progress
from prelabel.report import RunSummary, SampleOutcome
from prelabel.segments_client import SampleRef, SegmentsApi
from prelabel.serve.dedup import DeliveryLog
from prelabel.serve.lifecycle import Observer, ShouldStop
from prelabel.serve.metrics import Metrics
from prelabel.serve.service import ServeConfig, ServeObserver, Service
from prelabel.serve.webhooks import SignatureVerifier
from prelabel.state import StateStore
from prelabel.worker import DatasetWorker, Job, RunOptions
from prelabel.worker import prepare as prepare_dataset

if TYPE_CHECKING:
    from prelabel.pipeline.pipeline import Pipeline


class WorkerLifecycle:
    """Today's lifecycle behind serve's seam (see :mod:`prelabel.serve.lifecycle`)."""

    def __init__(
        self,
        api_key: str,
        settings: Settings,
        *,
        labelset: str,
        state: StateStore,
        load_pipeline: Callable[[], Pipeline],
        observer: Observer,
        output_dir: Path,
        overwrite_prelabels: bool = False,
    ) -> None:
        self._key = api_key
        self._settings = settings
        self._labelset = labelset
        self._state = state
        self._pipeline = _SharedPipeline(load_pipeline, observer.on_inference)
        self._observer = observer
        self._output_dir = output_dir
        #: --overwrite-prelabels holds for each dataset's first complete cycle only, as in sync.
        self._overwrite_first = overwrite_prelabels
        self._overwritten: set[str] = set()
        self._webhook_api: SegmentsApi | None = None  # the webhook thread's connection
        self._probe_api: SegmentsApi | None = None  # the probe thread's

    def prepare(self, dataset: str) -> None:
        api = SegmentsApi.connect(self._key, self._settings.remote)
        try:
            prepare_dataset(api, self._settings, self._options(dataset, "cycle"))
        finally:
            api.close()

    def load_models(self) -> None:
        self._pipeline()

    def check_api(self) -> None:
        if self._probe_api is None:
            self._probe_api = SegmentsApi.connect(self._key, self._settings.remote)
        self._probe_api.ping()

    def label_samples(
        self, dataset: str, sample_uuids: Iterable[str], should_stop: ShouldStop
    ) -> None:
        if self._webhook_api is None:
            self._webhook_api = SegmentsApi.connect(self._key, self._settings.remote)
        options = self._options(dataset, "webhooks")
        self._run(self._webhook_api, options, should_stop, sample_uuids=iter(sample_uuids))

    def run_cycle(self, dataset: str, should_stop: ShouldStop) -> RunSummary:
        overwrite = self._overwrite_first and dataset not in self._overwritten
        options = self._options(dataset, "cycle", overwrite_prelabels=overwrite)
        api = SegmentsApi.connect(self._key, self._settings.remote)
        try:
            summary = self._run(api, options, should_stop, sample_uuids=None)
        finally:
            api.close()
        if not should_stop():
            self._overwritten.add(dataset)
        return summary

    def close(self) -> None:
        for api in (self._webhook_api, self._probe_api):
            if api is not None:
                api.close()

    def _options(self, dataset: str, kind: str, *, overwrite_prelabels: bool = False) -> RunOptions:
        folder = self._output_dir / dataset.replace("/", "__") / kind
        return RunOptions(
            dataset=dataset,
            labelset=self._labelset,
            overwrite_prelabels=overwrite_prelabels,
            output_dir=folder,
        )

    def _run(
        self,
        api: SegmentsApi,
        options: RunOptions,
        should_stop: ShouldStop,
        *,
        sample_uuids: Iterator[str] | None,
    ) -> RunSummary:
        info, taxonomy = prepare_dataset(api, self._settings, options)
        worker = _ObservedWorker(
            api,
            self._settings,
            options,
            taxonomy,
            self._state,
            self._pipeline,
            expected_samples=None if sample_uuids is not None else info.samples_count,
            observer=self._observer,
            stream=sample_uuids,
        )
        return worker.run(NullProgress(), should_stop=should_stop)


class _ObservedWorker(DatasetWorker):
    """Reports every outcome to the observer; selects from ``stream`` when one is set."""

    def __init__(
        self, *args: Any, observer: Observer, stream: Iterator[str] | None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.observer = observer
        self.stream = stream

    def deliver(self, job: Job) -> SampleOutcome:
        outcome = super().deliver(job)
        self.observer.on_outcome(self.options.dataset, outcome)
        return outcome

    def _selected(self, progress: Progress, should_stop: Callable[[], bool]) -> Iterator[SampleRef]:
        if self.stream is None:
            yield from super()._selected(progress, should_stop)
            return
        while not should_stop():
            uuid = next(self.stream, None)
            if uuid is None:
                return
            sample = self.api.get_sample(uuid, self.options.labelset)
            if sample is None:
                gone = SampleOutcome(uuid, "", "skipped", reason="sample was deleted")
                self.observer.on_outcome(self.options.dataset, gone)
                continue
            yield sample


class _SharedPipeline:
    """The ``load_pipeline`` callable for every thread: one load, timed and serialised calls."""

    def __init__(self, load: Callable[[], Pipeline], on_inference: Callable[[float], None]) -> None:
        self._load = load
        self._on_inference = on_inference
        self._load_lock = threading.Lock()
        self._call_lock = threading.Lock()
        self._loaded: Pipeline | None = None

    def __call__(self) -> Pipeline:
        with self._load_lock:
            if self._loaded is None:
                # The worker calls predict and predict_batch only; this stands in for both.
                self._loaded = cast("Pipeline", _TimedPipeline(self._load(), self))
            return self._loaded

    def timed(self, fn: Callable[..., Any], images: int, *args: Any, **kwargs: Any) -> Any:
        with self._call_lock:
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            per_image = (time.perf_counter() - start) / max(images, 1)
        for _ in range(images):
            self._on_inference(per_image)
        return result


class _TimedPipeline:
    def __init__(self, pipeline: Pipeline, shared: _SharedPipeline) -> None:
        self._pipeline = pipeline
        self._shared = shared

    def predict(self, image: Any, *args: Any, **kwargs: Any) -> Any:
        return self._shared.timed(self._pipeline.predict, 1, image, *args, **kwargs)

    def predict_batch(self, images: list[Any], *args: Any, **kwargs: Any) -> Any:
        return self._shared.timed(
            self._pipeline.predict_batch, len(images), images, *args, **kwargs
        )


def create_worker_service(
    config: ServeConfig,
    *,
    api_key: str,
    webhook_secret: str,
    settings: Settings,
    state: StateStore,
    load_pipeline: Callable[[], Pipeline],
    output_dir: Path,
    overwrite_prelabels: bool = False,
) -> tuple[Service, WorkerLifecycle, DeliveryLog]:
    """A :class:`Service` over today's worker; the caller closes the lifecycle and the log."""
    metrics = Metrics()
    lifecycle = WorkerLifecycle(
        api_key,
        settings,
        labelset=config.labelset,
        state=state,
        load_pipeline=load_pipeline,
        observer=ServeObserver(metrics),
        output_dir=output_dir,
        overwrite_prelabels=overwrite_prelabels,
    )
    deliveries = DeliveryLog(state.path)
    service = Service(
        lifecycle,
        config,
        verifier=SignatureVerifier(webhook_secret),
        deliveries=deliveries,
        metrics=metrics,
    )
    return service, lifecycle, deliveries
