"""Pre-label a Segments.ai dataset: source -> pipeline -> encode -> upload, per sample.

Each sample is isolated: its failure is recorded (state, report, summary) and the run goes on.
Only problems that would fail every sample stop the run: a refused API key, a wrong task type,
categories the config does not match, models that cannot load.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from prelabel.config import Settings
from prelabel.encode import encode_label, label_attributes
from prelabel.errors import (
    AuthError,
    ConfigError,
    ModelLoadError,
    PrelabelError,
    RemoteError,
    TransientRemoteError,
)
from prelabel.overlap import run_overlapped
from prelabel.panoptic import PanopticPrediction
from prelabel.progress import NullProgress, Progress
from prelabel.report import ReportWriter, RunSummary, SampleOutcome
from prelabel.segments_client import BITMAP_TASK_TYPES, DatasetInfo, SampleRef, SegmentsApi
from prelabel.source import is_selectable, load_image, select_samples
from prelabel.state import LABELED, UPLOADED, StateStore
from prelabel.taxonomy import Taxonomy, build_taxonomy, categories_from_task_attributes
from prelabel.upload import PendingLabel, upload_asset, write_label

if TYPE_CHECKING:
    # Importing the pipeline imports torch and transformers (seconds): only when a model is
    # needed, so a refused key or a wrong dataset is reported at once.
    from prelabel.pipeline.pipeline import Pipeline

logger = logging.getLogger(__name__)

#: After this many samples in a row (in the order they finish) fail on transient errors, each
#: after its own retries, the server is down, not the samples bad: stop instead of marking the
#: whole dataset failed.
_MAX_CONSECUTIVE_TRANSIENT = 3


def owner_is_dead(owner: str) -> bool:
    """True when a lease owner ran on this machine and its process is gone.

    Owners on other machines cannot be checked from here: their leases run out after
    ``worker.lease_s``.
    """
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        return False
    return False


@dataclass
class Job:
    """One sample on its way through the steps; what each step adds, the next one uses."""

    sample: SampleRef
    #: Set on resume when the bitmap was uploaded before: nothing to predict.
    pending: PendingLabel | None = None
    image: Image.Image | None = None
    prediction: PanopticPrediction | None = None
    segments: int | None = None
    #: Set once the sample is finished (also early: skipped or failed).
    outcome: SampleOutcome | None = None
    #: Whether this worker holds the sample's lease in the state store.
    leased: bool = False

    def finish(self, outcome: SampleOutcome) -> None:
        self.outcome = outcome
        self.image = None
        self.prediction = None


@dataclass(frozen=True)
class RunOptions:
    dataset: str
    labelset: str = "ground-truth"
    limit: int | None = None
    dry_run: bool = False
    overwrite_prelabels: bool = False
    #: report.json goes here, and with ``dry_run`` what would have been uploaded.
    output_dir: Path = Path("prelabel-output")


def prepare(
    api: SegmentsApi, settings: Settings, options: RunOptions
) -> tuple[DatasetInfo, Taxonomy]:
    """Everything checkable before any sample is touched; raises ConfigError with the reason."""
    info = api.get_dataset(options.dataset)
    if info.task_type not in BITMAP_TASK_TYPES:
        raise ConfigError(
            f"dataset {options.dataset} has task type {info.task_type!r}; prelabel writes "
            f"segmentation bitmaps and needs one of {', '.join(sorted(BITMAP_TASK_TYPES))}"
        )
    if info.labelsets and options.labelset not in info.labelsets:
        raise ConfigError(
            f"dataset {options.dataset} has no labelset {options.labelset!r}; "
            f"it has {', '.join(info.labelsets)}"
        )
    categories = categories_from_task_attributes(info.task_attributes)
    if not categories:
        raise ConfigError(f"dataset {options.dataset} defines no categories")
    taxonomy = build_taxonomy(categories, settings.categories, settings.pipeline)
    return info, taxonomy


class DatasetWorker:
    """Runs the per-sample steps; the loop lives in :meth:`run` (and in sync, ray, ...)."""

    def __init__(
        self,
        api: SegmentsApi,
        settings: Settings,
        options: RunOptions,
        taxonomy: Taxonomy,
        state: StateStore,
        load_pipeline: Callable[[], Pipeline],
        *,
        expected_samples: int | None = None,
    ) -> None:
        self.api = api
        self.settings = settings
        self.options = options
        self.taxonomy = taxonomy
        self.state = state
        self._load_pipeline = load_pipeline
        self._pipeline: Pipeline | None = None
        self._expected = expected_samples
        #: Lease owner: unique per worker object, readable in reports ("host:pid:xxxx").
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"

    @property
    def pipeline(self) -> Pipeline:
        """Loaded on first use: a run with nothing to do never loads the models."""
        if self._pipeline is None:
            self._pipeline = self._load_pipeline()
        return self._pipeline

    def run(
        self, progress: Progress | None = None, *, should_stop: Callable[[], bool] | None = None
    ) -> RunSummary:
        """Label every selected sample, overlapped or one after the other (``worker.engine``).

        ``should_stop`` is polled between samples (sync's signal handling): once it returns
        True no new sample starts, samples already uploading finish, and the run returns.
        """
        progress = progress or NullProgress()
        summary = RunSummary()
        opts = self.options
        writer = ReportWriter(
            opts.output_dir / "report.json",
            {"dataset": opts.dataset, "labelset": opts.labelset, "dry_run": opts.dry_run},
        )
        # The bar counts listed samples (those already labeled pass quickly) against the
        # dataset's size; with --limit it counts the processed ones against the limit.
        progress.start(opts.limit or self._expected, "pre-label")

        consecutive_transient = 0

        def record(outcome: SampleOutcome) -> None:
            nonlocal consecutive_transient
            summary.add(outcome)
            writer.add(outcome)
            progress.advance()
            progress.note(**{k: v for k, v in summary.counts.items() if v})
            consecutive_transient = consecutive_transient + 1 if outcome.transient else 0
            if consecutive_transient == _MAX_CONSECUTIVE_TRANSIENT:
                raise RemoteError(
                    f"stopping: {consecutive_transient} samples in a row failed to reach the "
                    f"server after retries (last: {outcome.reason}); rerun to resume"
                )

        stop = should_stop or (lambda: False)
        samples = self._selected(progress, stop)
        try:
            if self.settings.worker.engine == "sequential":
                for sample in samples:
                    record(self.process(sample))
            else:
                run_overlapped(self, samples, self.settings.worker, record, stop)
        finally:
            self.state.release_all(self.owner)  # samples abandoned on stop become free
            progress.close()
            summary.report_path = writer.close(summary)
        return summary

    def _selected(self, progress: Progress, should_stop: Callable[[], bool]) -> Iterator[SampleRef]:
        opts = self.options
        done = 0
        for sample, selected in select_samples(
            self.api, opts.dataset, opts.labelset, overwrite_prelabels=opts.overwrite_prelabels
        ):
            if should_stop() or (opts.limit is not None and done >= opts.limit):
                return
            if not selected:
                if opts.limit is None:
                    progress.advance()
                continue
            done += 1
            yield sample

    def process(self, sample: SampleRef) -> SampleOutcome:
        """One sample from listing to label; never raises for a problem of this sample alone."""
        return self.deliver(self.infer(self.fetch(self.begin(sample))))

    # The steps. Each takes and returns a Job and never raises for a problem of this sample
    # alone: it records the failure in job.outcome and later steps pass the job through. So the
    # sequential loop and the overlapped one (prelabel.overlap) share every rule.

    def begin(self, sample: SampleRef) -> Job:
        """Consult the resume state: skip, reuse an uploaded asset, or start from scratch."""
        job = Job(sample)
        return self._guard(job, self._begin)

    def fetch(self, job: Job) -> Job:
        """Download and decode the image (I/O: runs in a thread pool when overlapped)."""
        return self._guard(job, self._fetch)

    def infer(self, job: Job) -> Job:
        """Predict the panoptic map (the one stage that uses the model)."""
        return self._guard(job, self._infer)

    def infer_batch(self, jobs: list[Job]) -> list[Job]:
        """:meth:`infer` for several jobs in one model call; if the batch fails, each job is
        retried alone so one odd image fails only itself."""
        todo = [j for j in jobs if j.outcome is None and j.pending is None and j.image is not None]
        if len(todo) < 2:
            return [self.infer(job) for job in jobs]
        try:
            predictions = self.pipeline.predict_batch([j.image for j in todo], self.taxonomy)
        except (ModelLoadError, AuthError):
            raise
        except (PrelabelError, OSError, ValueError, RuntimeError) as exc:
            logger.warning("batch of %d failed (%s); predicting one by one", len(todo), exc)
            return [self.infer(job) for job in jobs]
        for job, prediction in zip(todo, predictions, strict=True):
            job.prediction, job.image = prediction, None
        return jobs

    def deliver(self, job: Job) -> SampleOutcome:
        """Encode, upload, re-read and write the label, record state (I/O: thread pool)."""
        try:
            job = self._guard(job, self._deliver)
        finally:
            if job.leased:
                opts = self.options
                self.state.release(opts.dataset, opts.labelset, job.sample.uuid, self.owner)
        if job.outcome is None:  # a bug in the steps, not in the sample
            raise RuntimeError(f"sample {job.sample.name} finished without an outcome")
        return job.outcome

    def _guard(self, job: Job, step: Callable[[Job], None]) -> Job:
        if job.outcome is not None:
            return job
        sample = job.sample
        try:
            step(job)
        except (AuthError, ModelLoadError):
            raise  # would fail every sample alike
        except TransientRemoteError as exc:
            reason, transient = str(exc), True
        except PrelabelError as exc:
            reason, transient = str(exc), False
        except (OSError, ValueError, RuntimeError) as exc:
            # A bug or an odd input in the model code: keep the traceback in the log.
            logger.exception("sample %s (%s) failed", sample.name, sample.uuid)
            reason, transient = f"{type(exc).__name__}: {exc}", False
        else:
            return job
        logger.error("sample %s (%s) failed: %s", sample.name, sample.uuid, reason)
        opts = self.options
        if not opts.dry_run:
            self.state.mark_failed(opts.dataset, opts.labelset, sample.uuid, sample.name, reason)
        job.finish(
            SampleOutcome(sample.uuid, sample.name, "failed", reason=reason, transient=transient)
        )
        return job

    def _begin(self, job: Job) -> None:
        opts, sample = self.options, job.sample
        if opts.dry_run:
            return
        ttl = self.settings.worker.lease_s
        holder = self.state.claim(opts.dataset, opts.labelset, sample.uuid, self.owner, ttl)
        # A worker on this machine that was killed (kill -9) leaves its leases behind.
        if (
            holder is not None
            and owner_is_dead(holder)
            and self.state.take_over(
                opts.dataset, opts.labelset, sample.uuid, holder, self.owner, ttl
            )
        ):
            holder = None
        if holder is not None:
            reason = f"being labeled by another worker ({holder})"
            job.finish(SampleOutcome(sample.uuid, sample.name, "skipped", reason=reason))
            return
        job.leased = True
        # The listing may be minutes old (and another worker may just have finished this
        # sample): one GET now saves a prediction and an orphan upload. The write still
        # re-reads right before writing.
        current = self.api.label_state(sample.uuid, opts.labelset)
        if not is_selectable(current.status, overwrite_prelabels=opts.overwrite_prelabels):
            reason = f"labeled meanwhile ({current.status})"
            job.finish(SampleOutcome(sample.uuid, sample.name, "skipped", reason=reason))
            return
        record = self.state.get(opts.dataset, opts.labelset, sample.uuid)
        if record is None:
            return
        if record.stage == LABELED and not opts.overwrite_prelabels:
            reason = "prelabel wrote this label before and it was removed on the server"
            self.state.mark_skipped(opts.dataset, opts.labelset, sample.uuid, sample.name, reason)
            job.finish(SampleOutcome(sample.uuid, sample.name, "skipped", reason=reason))
        elif record.stage == UPLOADED and record.asset_url and record.attributes:
            job.pending = PendingLabel(record.asset_url, record.attributes, record.score or 0.0)
            job.segments = len(record.attributes.get("annotations", []))

    def _fetch(self, job: Job) -> None:
        if job.pending is None:
            max_pixels = self.settings.pipeline.max_image_pixels
            job.image = load_image(self.api, job.sample, max_pixels=max_pixels)

    def _infer(self, job: Job) -> None:
        if job.pending is None and job.image is not None:
            job.prediction = self.pipeline.predict(job.image, self.taxonomy)
            job.image = None  # the image is not needed any more; free it early

    def _deliver(self, job: Job) -> None:
        opts, sample = self.options, job.sample
        pending = job.pending
        if pending is None:
            if job.prediction is None:
                raise RuntimeError("deliver() before infer()")
            encoded = encode_label(job.prediction)
            job.segments = len(job.prediction.segments)
            job.prediction = None
            if opts.dry_run:
                self._save_dry_run(sample, encoded.png, encoded.annotations, encoded.score)
                job.finish(
                    SampleOutcome(
                        sample.uuid,
                        sample.name,
                        "dry-run",
                        segments=job.segments,
                        score=encoded.score,
                    )
                )
                return
            pending = upload_asset(
                self.api,
                self.state,
                dataset=opts.dataset,
                labelset=opts.labelset,
                sample_uuid=sample.uuid,
                sample_name=sample.name,
                encoded=encoded,
            )
        result = write_label(
            self.api,
            self.settings.remote,
            sample_uuid=sample.uuid,
            labelset=opts.labelset,
            pending=pending,
            overwrite=opts.overwrite_prelabels,
        )
        if not result.written:
            reason = result.reason or "not written"
            self.state.mark_skipped(opts.dataset, opts.labelset, sample.uuid, sample.name, reason)
            job.finish(SampleOutcome(sample.uuid, sample.name, "skipped", reason=reason))
            return
        self.state.mark_labeled(opts.dataset, opts.labelset, sample.uuid, sample.name)
        job.finish(
            SampleOutcome(
                sample.uuid, sample.name, "labeled", segments=job.segments, score=pending.score
            )
        )

    def _save_dry_run(
        self, sample: SampleRef, png: bytes, annotations: list[dict[str, int]], score: float
    ) -> None:
        folder = self.options.output_dir / "dry-run"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{sample.uuid}.png").write_bytes(png)
        attributes = label_attributes(annotations, f"{sample.uuid}.png")
        payload = {
            "sample_uuid": sample.uuid,
            "sample_name": sample.name,
            "label_status": "PRELABELED",
            "score": score,
            "attributes": attributes,
        }
        (folder / f"{sample.uuid}.json").write_text(json.dumps(payload, indent=2))


def run_dataset(
    api_key: str,
    settings: Settings,
    options: RunOptions,
    *,
    state: StateStore,
    load_pipeline: Callable[[], Pipeline],
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunSummary:
    """Connect, check the dataset, and label what needs labeling: one ``prelabel run``.

    ``load_pipeline`` is called at most once, and only when a sample needs a prediction; sync
    passes a cached loader so models load once across cycles.
    """
    api = SegmentsApi.connect(api_key, settings.remote)
    try:
        info, taxonomy = prepare(api, settings, options)
        worker = DatasetWorker(
            api,
            settings,
            options,
            taxonomy,
            state,
            load_pipeline,
            expected_samples=info.samples_count,
        )
        return worker.run(progress, should_stop=should_stop)
    finally:
        api.close()
