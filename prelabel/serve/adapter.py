"""Serve's :class:`~prelabel.serve.lifecycle.Lifecycle` over :mod:`prelabel.run`.

The only module of :mod:`prelabel.serve` that knows the per-sample lifecycle. Each run, a
webhook batch or a cycle, is the lifecycle's own: the steps for the dataset's kind (images or
image sequences, :func:`~prelabel.run.kinds.steps_for`, as for ``prelabel run``)
scheduled by a :class:`~prelabel.run.dataset.DatasetWorker`, nothing subclassed or overridden.
A webhook batch hands the worker ``samples``: the queue's uuids, each re-read through the SDK
(:func:`~prelabel.run.dataset.announced_samples`); a cycle lets it list the dataset, exactly as
``prelabel run`` does, with ``--overwrite-prelabels`` for the first cycle only
(:class:`~prelabel.run.sync.CycleOptions`). Every outcome, a deleted sample's included, reaches
the observer through the recorder's ``on_outcome`` hook, in the sequential and the overlapped
engine alike.

Models load once for every thread, and inference is serialised on them: webhook batches and
cycles may run at once, and one model on one device gains nothing from two concurrent calls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from PIL import Image

from prelabel.config import Settings
from prelabel.errors import ConfigError
from prelabel.panoptic import FramePrediction, PanopticPrediction, TrackInfo
from prelabel.progress import NullProgress
from prelabel.run.dataset import DatasetWorker, announced_samples
from prelabel.run.frame_io import SequencePredictor
from prelabel.run.job import RunOptions
from prelabel.run.kinds import steps_for
from prelabel.run.policy import ends_loop
from prelabel.run.report import RunSummary
from prelabel.run.steps import Predictor
from prelabel.run.sync import CycleOptions
from prelabel.segments.client import SampleRef, SegmentsApi
from prelabel.segments.dataset import check_dataset
from prelabel.serve.dedup import DeliveryLog
from prelabel.serve.lifecycle import Observer, ShouldStop
from prelabel.serve.metrics import Metrics
from prelabel.serve.service import ServeConfig, ServeObserver, Service
from prelabel.serve.webhooks import SignatureVerifier
from prelabel.state import StateStore
from prelabel.taxonomy import Taxonomy

T = TypeVar("T")


class WorkerLifecycle:
    """:mod:`prelabel.run` behind serve's seam (see :mod:`prelabel.serve.lifecycle`)."""

    def __init__(
        self,
        api_key: str,
        settings: Settings,
        *,
        labelset: str,
        state: StateStore,
        load_pipeline: Callable[[], Predictor],
        observer: Observer,
        output_dir: Path,
        overwrite_prelabels: bool = False,
        retry_failed: bool = False,
    ) -> None:
        self._key = api_key
        self._settings = settings
        self._labelset = labelset
        self._state = state
        self._pipeline = _SharedPipeline(load_pipeline, observer.on_inference)
        self._observer = observer
        self._output_dir = output_dir
        self._overwrite_prelabels = overwrite_prelabels
        self._retry_failed = retry_failed
        self._cycles: dict[str, CycleOptions] = {}  # per dataset
        self._webhook_api: SegmentsApi | None = None  # the webhook thread's connection
        self._probe_api: SegmentsApi | None = None  # the probe thread's

    def prepare(self, dataset: str) -> None:
        api = self._connect()
        try:
            info, _ = check_dataset(
                api, self._settings, dataset, self._labelset, sequences=True, vectors=True
            )
        finally:
            api.close()
        if info.is_sequence and not self._pipeline.has_sequence:
            raise ConfigError(
                f"dataset {dataset} is an image sequence; these models cannot track over frames"
            )

    def load_models(self) -> None:
        self._pipeline()

    def check_api(self) -> None:
        if self._probe_api is None:
            self._probe_api = self._connect()
        self._probe_api.ping()

    def label_samples(
        self, dataset: str, sample_uuids: Iterable[str], should_stop: ShouldStop
    ) -> None:
        if self._webhook_api is None:
            self._webhook_api = self._connect()
        api, options = self._webhook_api, self._options(dataset, "webhooks")
        samples = announced_samples(api, options.labelset, sample_uuids, should_stop=should_stop)
        self._run(api, options, should_stop, samples)

    def run_cycle(self, dataset: str, should_stop: ShouldStop) -> RunSummary:
        if dataset not in self._cycles:
            first = replace(
                self._options(dataset, "cycle", overwrite_prelabels=self._overwrite_prelabels),
                retry_failed=self._retry_failed,
            )
            self._cycles[dataset] = CycleOptions(first)
        cycles = self._cycles[dataset]
        api = self._connect()
        try:
            summary = self._run(api, cycles.current, should_stop, samples=None)
        finally:
            api.close()
        cycles.completed()
        return summary

    def ends_loop(self, exc: BaseException) -> bool:
        return ends_loop(exc)

    def close(self) -> None:
        for api in (self._webhook_api, self._probe_api):
            if api is not None:
                api.close()

    def _connect(self) -> SegmentsApi:
        return SegmentsApi.connect(self._key, self._settings.remote)

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
        samples: Iterable[SampleRef] | None,
    ) -> RunSummary:
        """One worker run over ``samples``, or over the dataset's listing when None."""
        info, taxonomy = check_dataset(
            api, self._settings, options.dataset, options.labelset, sequences=True, vectors=True
        )
        # Images or sequences: decided in one place, as for `prelabel run`.
        steps = steps_for(api, self._settings, options, info, taxonomy, self._pipeline)
        worker = DatasetWorker(
            steps,
            self._state,
            expected_samples=info.samples_count if samples is None else None,
            on_outcome=lambda outcome: self._observer.on_outcome(options.dataset, outcome),
        )
        return worker.run(NullProgress(), should_stop=should_stop, samples=samples)


class _SharedPipeline:
    """The ``load_pipeline`` callable for every thread: one load, timed and serialised calls."""

    def __init__(
        self, load: Callable[[], Predictor], on_inference: Callable[[float], None]
    ) -> None:
        self._load = load
        self._on_inference = on_inference
        self._load_lock = threading.Lock()
        # Reentrant: a sequence's stream holds it while its frames are consumed.
        self._call_lock = threading.RLock()
        self._loaded: _TimedPipeline | None = None
        self._sequence: _SerialSequencePipeline | None = None

    def __call__(self) -> Predictor:
        with self._load_lock:
            if self._loaded is None:
                self._loaded = _TimedPipeline(self._load(), self)
            return self._loaded

    @property
    def has_sequence(self) -> bool:
        """Whether the loader offers the sequence pipeline (image-sequence datasets)."""
        return callable(getattr(self._load, "sequence", None))

    def sequence(self) -> SequencePredictor:
        """The loader's sequence pipeline, once; a sequence streams through it while it holds
        the model lock, so a webhook batch and a cycle never interleave their frames."""
        with self._load_lock:
            if self._sequence is None:
                load = getattr(self._load, "sequence", None)
                if load is None:
                    raise ConfigError("these models cannot track objects over frames")
                self._sequence = _SerialSequencePipeline(load(), self._call_lock)
            return self._sequence

    def timed(self, images: int, call: Callable[[], T]) -> T:
        with self._call_lock:
            start = time.perf_counter()
            result = call()
            per_image = (time.perf_counter() - start) / max(images, 1)
        for _ in range(images):
            self._on_inference(per_image)
        return result


class _TimedPipeline:
    """A :class:`~prelabel.run.steps.Predictor` whose calls are timed and serialised by
    :meth:`_SharedPipeline.timed`, with the ``predict_batch`` that
    :meth:`~prelabel.run.steps.SampleSteps.infer_batch` uses (one image at a time when the
    model has none)."""

    def __init__(self, pipeline: Predictor, shared: _SharedPipeline) -> None:
        self._pipeline = pipeline
        self._shared = shared

    def predict(self, image: Image.Image, taxonomy: Taxonomy) -> PanopticPrediction:
        return self._shared.timed(1, lambda: self._pipeline.predict(image, taxonomy))

    def predict_batch(
        self, images: list[Image.Image], taxonomy: Taxonomy
    ) -> list[PanopticPrediction]:
        batch = getattr(self._pipeline, "predict_batch", None)
        if batch is None:
            return [self.predict(image, taxonomy) for image in images]
        predictions: list[PanopticPrediction] = self._shared.timed(
            len(images), lambda: batch(images, taxonomy)
        )
        return predictions


class _SerialSequencePipeline:
    """A :class:`~prelabel.run.frame_io.SequencePredictor` whose streams take turns with
    every other model call (the lock is held from a sequence's first frame to its last)."""

    def __init__(self, pipeline: SequencePredictor, lock: threading.RLock) -> None:
        self._pipeline = pipeline
        self._lock = lock

    @property
    def tracks(self) -> tuple[TrackInfo, ...]:
        return self._pipeline.tracks

    @tracks.setter
    def tracks(self, value: tuple[TrackInfo, ...]) -> None:  # the protocol's attribute
        self._pipeline.tracks = value

    def predict_frames(
        self, frames: Iterable[Image.Image], taxonomy: Taxonomy
    ) -> Iterator[FramePrediction]:
        with self._lock:
            yield from self._pipeline.predict_frames(frames, taxonomy)


def create_worker_service(
    config: ServeConfig,
    *,
    api_key: str,
    webhook_secret: str,
    settings: Settings,
    state: StateStore,
    load_pipeline: Callable[[], Predictor],
    output_dir: Path,
    overwrite_prelabels: bool = False,
    retry_failed: bool = False,
) -> tuple[Service, WorkerLifecycle, DeliveryLog]:
    """A :class:`Service` over :mod:`prelabel.run`; the caller closes the lifecycle and the log."""
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
        retry_failed=retry_failed,
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
