"""Scale a run past one GPU on Ray Data: ``prelabel run --engine ray``.

The Ray engine is a scheduler over the same lifecycle as the local engines
(:mod:`prelabel.run.lifecycle`), on the same driver (:func:`~prelabel.run.driver.drive`); only
where each stage runs differs:

1. The driver connects, checks the dataset, lists the samples and *admits* each one through the
   run's :class:`~prelabel.run.recorder.Recorder` (leases, resume records), as locally.
   Samples whose bitmap an earlier run uploaded carry it along in their job.
2. ``_Predict``, an actor pool with one model copy per actor (loaded once, in the actor's
   constructor), runs the check, fetch, infer (``predict_batch`` on ``batch_size`` samples)
   and encode steps. ``--workers`` actors, ``--gpus-per-worker`` each. The steps are the
   dataset's (:func:`~prelabel.run.sequence_steps.steps_for`): on an image-sequence dataset a
   sequence's frames stream through SAM 2 and their bitmaps upload as they are predicted;
   they travel back in the job and the upload actor builds the label from them. On a box or
   polygon dataset the encoded label (``job.vector_label``) travels back in the job instead.
3. ``_Deliver``, a second pool of CPU actors, runs the deliver step's upload (the bitmap; for
   a box or polygon label nothing: the label becomes the pending one) and reports it back in
   the returned job.
4. The driver records the upload (workers share no disk, so only the driver keeps state),
   *then* writes the label: the lifecycle's deliver stage, as locally, whose upload is done
   (:meth:`~prelabel.run.steps.SampleSteps.deliver`, in a small thread pool: re-read the label
   right before writing, never over a person's label, not again when our bitmap is already
   there); a run killed between the two finds the bitmap in its state and reuses it.
   Then it records each job (state, report, progress, the policy's stops).

Jobs cross machines pickled in a one-column row: they are plain dataclasses. Every step runs
under the failure policy (:mod:`prelabel.run.policy`), so an unexpected exception fails one
sample, never the Ray job; run-wide errors end the run as locally.

Why a sample is written once even when Ray retries: Ray Data re-runs a batch whose actor died.
A retried upload uploads a new bitmap; the label is written once, by the driver.

Ray is an optional extra (``pip install prelabel[ray]``), imported only here.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prelabel.config import Settings
from prelabel.errors import ConfigError, PrelabelError
from prelabel.progress import NullProgress, Progress
from prelabel.run.dataset import selected_samples
from prelabel.run.driver import drive
from prelabel.run.frame_io import SequencePredictor
from prelabel.run.job import Job, RunOptions
from prelabel.run.kinds import steps_for
from prelabel.run.lifecycle import Lifecycle, collect_finished
from prelabel.run.models import pipeline_loader
from prelabel.run.recorder import Recorder
from prelabel.run.report import ReportWriter, RunSummary
from prelabel.run.steps import Predictor, SampleSteps
from prelabel.segments.client import DatasetInfo, SampleRef, SegmentsApi
from prelabel.segments.dataset import check_dataset
from prelabel.state import StateStore
from prelabel.taxonomy import Taxonomy


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None
    #: Prediction actors (one model copy each).
    workers: int = 1
    #: None: 1 when the cluster has GPUs, else 0.
    gpus_per_worker: float | None = None
    cpus_per_worker: float = 1.0
    #: Samples per prediction call of an actor (one ``predict_batch`` call).
    batch_size: int = 4
    #: Upload actors (I/O bound; cheap).
    upload_workers: int = 2
    #: torch intra-op threads per actor; 0 leaves torch's default.
    torch_threads: int = 0


def require_ray() -> None:
    """Raise :class:`ConfigError` when Ray is not installed: a usage problem, reported before
    the API or the dataset is asked anything."""
    _ray()


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray engine needs Ray: pip install 'prelabel[ray]'") from None
    return ray


def run_on_ray(
    api_key: str,
    settings: Settings,
    options: RunOptions,
    ray_options: RayOptions,
    *,
    state: StateStore,
    models_dir: Path | None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> RunSummary:
    """One ``prelabel run`` whose predictions and uploads run on a Ray cluster.

    Once ``should_stop()`` is true the driver records no further job and leaves the pools;
    what they had not returned is left for the next run (as after a kill: resumable).
    """
    ray = _ray()
    api = SegmentsApi.connect(api_key, settings.remote)
    try:
        info, taxonomy = check_dataset(
            api, settings, options.dataset, options.labelset, sequences=True, vectors=True
        )
        samples = list(selected_samples(api, options))
        # The label writes, on the driver: an image's or a sequence's (steps_for).
        steps = steps_for(api, settings, options, info, taxonomy, _NoModel())
        report = ReportWriter(
            options.output_dir / "report.json",
            {
                "dataset": options.dataset,
                "labelset": options.labelset,
                "dry_run": options.dry_run,
                "engine": "ray",
            },
        )
        recorder = Recorder(
            state, options, settings.worker, report=report, progress=progress or NullProgress()
        )
        setup = _ActorSetup(api_key, settings.model_dump_json(), options, taxonomy, info)
        engine = _RayEngine(ray, setup, settings, ray_options, models_dir)
        return drive(
            samples,
            steps,
            recorder,
            engine,
            should_stop=should_stop,
            expected=len(samples),
            description="pre-label (ray)",
        )
    finally:
        api.close()


@dataclass
class _RayEngine:
    """The Ray engine as the driver sees it (:data:`~prelabel.run.lifecycle.Engine`): it
    schedules the lifecycle's stages; the remote ones run in the actor pools."""

    ray: Any
    setup: _ActorSetup
    settings: Settings
    ray_options: RayOptions
    models_dir: Path | None

    def __call__(
        self, lifecycle: Lifecycle, samples: Iterable[SampleRef], should_stop: Callable[[], bool]
    ) -> None:
        """Admit every sample here, run the pools on the rest, and deliver each job that comes
        back here: its upload is recorded, then its label written (``lifecycle.deliver``, the
        local order: the actors uploaded already), then it is recorded."""
        rows = []
        for sample in samples:
            job = lifecycle.begin(sample)
            if job.finished:
                lifecycle.record(job)
            else:
                rows.append(_row(job))
        if rows:
            pools = _run_pools(
                self.ray, rows, self.setup, self.settings, self.ray_options, self.models_dir
            )
            _deliver_and_record(pools, lifecycle, self.settings.worker.deliver_workers, should_stop)


def _deliver_and_record(
    jobs: Iterable[Job], lifecycle: Lifecycle, writers: int, should_stop: Callable[[], bool]
) -> None:
    """For each job back from the pools: record its upload, then write its label (a pool of
    ``writers`` threads), then record it, on this thread. Once ``should_stop()`` is true no
    further job is taken from the pools; writes in flight finish on a stop or a run-wide
    error, so none is cut in half."""
    pool = ThreadPoolExecutor(max(writers, 1), thread_name_prefix="prelabel-write")
    writing: set[Future[Job]] = set()
    try:
        for job in jobs:
            while len(writing) >= 2 * max(writers, 1):
                collect_finished(writing, lifecycle.record, block=True)
            writing.add(pool.submit(lifecycle.deliver, job))
            collect_finished(writing, lifecycle.record, block=False)
            if should_stop():
                break
        while writing:
            collect_finished(writing, lifecycle.record, block=True)
    finally:
        pool.shutdown(wait=True)


def _run_pools(
    ray: Any,
    rows: list[dict[str, bytes]],
    setup: _ActorSetup,
    settings: Settings,
    ray_options: RayOptions,
    models_dir: Path | None,
) -> Iterator[Job]:
    """The two actor pools over ``rows``; yields each delivered job as it finishes.

    The key travels to the actors inside Ray (``setup``, a constructor argument); it is never
    logged there either, but anyone with access to the cluster's object store could read it:
    run on a cluster you control.
    """
    from ray.data import ActorPoolStrategy

    if not ray.is_initialized():
        _init_keeping_the_stop_signal(ray, ray_options.address)
    gpus = ray_options.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    predicted = ray.data.from_items(rows).map_batches(
        _Predict,
        fn_constructor_kwargs={
            "setup": setup,
            # Absolute: actors resolve paths in their own working directory.
            "models_dir": str(models_dir.resolve()) if models_dir else "",
            "torch_threads": ray_options.torch_threads,
        },
        compute=ActorPoolStrategy(size=ray_options.workers),
        batch_size=ray_options.batch_size,
        num_gpus=gpus,
        num_cpus=ray_options.cpus_per_worker,
    )
    delivered = predicted.map_batches(
        _Deliver,
        fn_constructor_kwargs={"setup": setup},
        compute=ActorPoolStrategy(size=ray_options.upload_workers),
        batch_size=1,
        num_cpus=0.25,
    )
    try:
        for row in delivered.iter_rows():
            yield _job(row)
    except ray.exceptions.RayActorError as exc:
        if not exc.actor_init_failed:
            raise
        # E.g. --models missing on a worker node: one line, as in the local engine.
        raise PrelabelError(f"a Ray actor failed to start: {_last_error(exc)}") from None


def _init_keeping_the_stop_signal(ray: Any, address: str | None) -> None:
    """``ray.init``, then the SIGTERM handler there was before it.

    ``ray.init`` installs its own (``sys.exit(15)``), which would end the driver wherever it
    is, writes in flight and the report included, with exit code 15 and Ray's stack dump:
    the run's :class:`~prelabel.run.sync.StopSignal` stops it as every engine stops (the jobs
    in flight recorded, the summary, exit 130).
    """
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if on_main_thread else None
    ray.init(address=address, log_to_driver=False)
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def _last_error(exc: Exception) -> str:
    """The message of the exception at the end of the remote traceback Ray reports as text."""
    text = str(exc).rstrip()
    _, sep, tail = text.rpartition("\nprelabel.errors.")
    if sep:
        return tail.partition(": ")[2]
    return text.splitlines()[-1] if text else type(exc).__name__


def _row(job: Job) -> dict[str, bytes]:
    return {"job": pickle.dumps(job)}


def _job(row: dict[str, Any]) -> Job:
    job = pickle.loads(row["job"])
    assert isinstance(job, Job)
    return job


def _jobs(batch: dict[str, Any]) -> list[Job]:
    return [_job({"job": data}) for data in batch["job"]]


def _batch(jobs: list[Job]) -> dict[str, list[bytes]]:
    return {"job": [pickle.dumps(job) for job in jobs]}


@dataclass(frozen=True)
class _ActorSetup:
    """What every actor is built from; travels to the actors as one constructor argument."""

    #: Never in a repr: Ray may log an actor's arguments.
    api_key: str = field(repr=False)
    settings_json: str
    options: RunOptions
    taxonomy: Taxonomy
    #: The dataset: its task type picks image or sequence steps.
    info: DatasetInfo

    def steps(self, load: Callable[[], Predictor]) -> SampleSteps:
        """The run's steps on this actor, over its own connection; for a sequence dataset
        ``load`` offers ``sequence()`` too (:func:`~prelabel.run.sequence_steps.steps_for`)."""
        settings = Settings.model_validate_json(self.settings_json)
        api = SegmentsApi.connect(self.api_key, settings.remote)
        return steps_for(api, settings, self.options, self.info, self.taxonomy, load)


class _Predict:
    """Prediction actor: one pipeline per actor, loaded in the constructor."""

    def __init__(self, setup: _ActorSetup, models_dir: str, torch_threads: int) -> None:
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        settings = Settings.model_validate_json(setup.settings_json)
        loader = pipeline_loader(settings, Path(models_dir) if models_dir else None)
        self.steps = setup.steps(loader)
        self.steps.load_models()
        _note_pid("predict")

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[bytes]]:
        # A sequence's frames are uploaded while predicted (they stream); they travel back in
        # the job (job.frames), and its label is built from them by the upload actor.
        steps = self.steps
        jobs = steps.infer_batch([steps.fetch(steps.check(job)) for job in _jobs(batch)])
        return _batch([steps.encode(job) for job in jobs])


class _Deliver:
    """Upload actor: the bitmap upload (the driver writes the label)."""

    def __init__(self, setup: _ActorSetup) -> None:
        self.steps = setup.steps(_NoModel())
        _note_pid("deliver")

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[bytes]]:
        # The upload travels back in the job (job.uploaded): the driver records it, then
        # writes the label.
        return _batch([self.steps.upload(job) for job in _jobs(batch)])


class _NoModel:
    """The loader of the steps that never predict (the upload actors, the driver's label
    writes): a call is a bug, not a sample's problem."""

    def __call__(self) -> Predictor:
        raise RuntimeError("an upload actor does not load models")

    def sequence(self) -> SequencePredictor:
        raise RuntimeError("an upload actor does not load models")


def _note_pid(role: str) -> None:
    """Tests kill actors by PID: they set PRELABEL_RAY_PID_DIR to learn them."""
    folder = os.environ.get("PRELABEL_RAY_PID_DIR")
    if folder:
        Path(folder, f"{role}-{os.getpid()}").touch()
