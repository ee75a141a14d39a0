"""The work on one sample, step by step: check, fetch, infer, encode, deliver.

Each step takes a :class:`~prelabel.run.job.Job` and returns it with what it learned: an
image, a prediction, an uploaded asset, an outcome. **No step writes state**: the recorder
(:mod:`prelabel.run.recorder`) does, on the engine's calling thread. The one exception in
time, not in ownership, is the upload: the recorder must know of an uploaded asset before the
label write refers to it, so :meth:`SampleSteps.deliver` calls the recorder's
``record_upload`` callback in between (the Ray engine passes one that leaves the fact in the
job, for the driver). Every step runs through the failure policy (:func:`guarded`), so a
problem of one sample fails that sample and the steps after it pass the job through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from PIL import Image

from prelabel.config import Settings
from prelabel.formats.atomic import write_json
from prelabel.formats.label import encode_label, label_attributes
from prelabel.panoptic import PanopticPrediction
from prelabel.run.job import Job, RunOptions
from prelabel.run.policy import ends_run, guarded
from prelabel.segments.client import SegmentsApi
from prelabel.segments.samples import load_image
from prelabel.segments.statuses import PRELABELED, may_write
from prelabel.segments.upload import PendingLabel, upload_asset, write_label
from prelabel.taxonomy import Taxonomy

logger = logging.getLogger(__name__)


class Predictor(Protocol):
    """The model the steps call: :class:`prelabel.pipeline.pipeline.Pipeline`, typed
    structurally so that no step imports torch (seconds) before a sample needs a prediction;
    a refused key or a wrong dataset is reported at once. ``predict_batch``, when the
    predictor has it, serves :meth:`SampleSteps.infer_batch`."""

    def predict(self, image: Image.Image, taxonomy: Taxonomy) -> PanopticPrediction: ...


#: Called by deliver between the asset upload and the label write.
UploadCallback = Callable[[Job], None]
#: Called with a job and a frame index when a sequence's frame bitmap is uploaded (during
#: inference: a sequence's frames stream out as they are predicted).
FrameCallback = Callable[[Job, int], None]


class SampleSteps:
    """The steps for one dataset and labelset; shared by every engine and front-end."""

    def __init__(
        self,
        api: SegmentsApi,
        settings: Settings,
        options: RunOptions,
        taxonomy: Taxonomy,
        load_pipeline: Callable[[], Predictor],
    ) -> None:
        self.api = api
        self.settings = settings
        self.options = options
        self.taxonomy = taxonomy
        self._load_pipeline = load_pipeline
        self._pipeline: Predictor | None = None

    @property
    def pipeline(self) -> Predictor:
        """Loaded on first use: a run with nothing to do never loads the models."""
        if self._pipeline is None:
            self._pipeline = self._load_pipeline()
        return self._pipeline

    def load_models(self) -> object:
        """Load the models now, before any sample's clock runs (see the lifecycle)."""
        return self.pipeline

    def check(self, job: Job) -> Job:
        """Re-read the label: skip a sample labeled since the listing (I/O)."""
        return guarded(job, self._check)

    def fetch(self, job: Job) -> Job:
        """Download and decode the image, unless a resumed label needs none (I/O)."""
        return guarded(job, self._fetch)

    def infer(self, job: Job) -> Job:
        """Predict the panoptic map (the one step that uses the model)."""
        return guarded(job, self._infer, in_model=True)

    def infer_batch(self, jobs: list[Job], record_frame: FrameCallback | None = None) -> list[Job]:
        """:meth:`infer` for several jobs in one model call (``predict_batch``).

        ``record_frame`` serves steps that upload while predicting (image sequences, see
        :class:`~prelabel.run.sequence_steps.SequenceSteps`); an image uploads in deliver.

        If the batch call fails, each job is predicted alone, so one odd image fails only
        itself; the policy decides as for :meth:`infer` (run-wide errors are raised).
        """
        todo = [j for j in jobs if not j.finished and j.pending is None and j.image is not None]
        predict_batch = getattr(self.pipeline, "predict_batch", None) if len(todo) > 1 else None
        if predict_batch is None:
            return [self.infer(job) for job in jobs]
        images = [j.image for j in todo if j.image is not None]
        try:
            predictions = predict_batch(images, self.taxonomy)
        except Exception as exc:
            if ends_run(exc):
                raise
            logger.warning("batch of %d failed (%s); predicting one by one", len(todo), exc)
            return [self.infer(job) for job in jobs]
        for job, prediction in zip(todo, predictions, strict=True):
            job.prediction, job.image = prediction, None
        return jobs

    def encode(self, job: Job) -> Job:
        """Turn the prediction into the bitmap PNG, annotations and score (CPU)."""
        return guarded(job, self._encode)

    def deliver(self, job: Job, record_upload: UploadCallback) -> Job:
        """Encode, upload the bitmap, re-read the label and write it (I/O).

        ``record_upload`` is called after the upload and before the write: the one order,
        written here. With ``dry_run`` what would be uploaded is saved under
        ``output_dir/dry-run/`` instead. The Ray engine runs the two halves apart (an actor
        uploads, the driver records and writes) in the same order.
        """
        job = self.upload(job)
        if job.uploaded:
            job = guarded(job, record_upload)
        return self.write(job)

    def upload(self, job: Job) -> Job:
        """Encode and upload the bitmap (``job.pending``, ``job.uploaded``), unless an earlier
        run did or this is a dry run (I/O)."""
        return guarded(self.encode(job), self._deliver)

    def write(self, job: Job) -> Job:
        """Re-read the label and write ``job.pending`` unless a person's label is there; with
        ``dry_run`` save what would be uploaded under ``output_dir/dry-run/`` instead."""
        return guarded(job, self._write)

    def _check(self, job: Job) -> None:
        if self.options.dry_run:
            return
        current = self.api.label_state(job.sample.uuid, self.options.labelset)
        if not may_write(current.status, overwrite=self.options.overwrite_prelabels):
            job.finish(
                "skipped", reason=f"labeled meanwhile ({current.status})", record_state=False
            )

    def _fetch(self, job: Job) -> None:
        if job.pending is None:
            max_pixels = self.settings.pipeline.max_image_pixels
            job.image = load_image(self.api, job.sample, max_pixels=max_pixels)

    def _infer(self, job: Job) -> None:
        if job.pending is None and job.image is not None:
            job.prediction = self.pipeline.predict(job.image, self.taxonomy)
            job.image = None  # the image is not needed any more; free it early

    def _encode(self, job: Job) -> None:
        if job.prediction is not None:
            job.encoded = encode_label(job.prediction)
            job.segments = len(job.prediction.segments)
            job.prediction = None

    def _deliver(self, job: Job) -> None:
        """The deliver step's first half, the upload (the write is :meth:`_write`); a dry
        run uploads nothing."""
        if job.pending is None and not self.options.dry_run:
            job.pending = self._upload(job)
            job.uploaded = True
            job.encoded = None

    def _write(self, job: Job) -> None:
        opts, sample = self.options, job.sample
        if opts.dry_run and job.pending is None:
            # Saved where the label would be written: the Ray engine's driver, this machine.
            job.finish("dry-run", score=self._save_dry_run(job))
            return
        if job.pending is None:
            raise RuntimeError("write() before upload()")
        result = write_label(
            self.api,
            self.settings.remote,
            sample_uuid=sample.uuid,
            labelset=opts.labelset,
            pending=job.pending,
            overwrite=opts.overwrite_prelabels,
        )
        if result.written:
            job.finish("labeled", score=job.pending.score)
        else:
            job.finish("skipped", reason=result.reason or "not written")

    def _upload(self, job: Job) -> PendingLabel:
        """Upload what the label refers to and return the label to write."""
        if job.encoded is None:
            raise RuntimeError("deliver() before infer()")
        return upload_asset(self.api, job.encoded, f"{job.sample.uuid}.png")

    def _save_dry_run(self, job: Job) -> float:
        """Save what would be uploaded under ``output_dir/dry-run/``; returns the score."""
        encoded, sample = job.encoded, job.sample
        if encoded is None:
            raise RuntimeError("deliver() before infer()")
        folder = self.options.output_dir / "dry-run"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{sample.uuid}.png").write_bytes(encoded.png)
        payload = {
            "sample_uuid": sample.uuid,
            "sample_name": sample.name,
            "label_status": PRELABELED,
            "score": encoded.score,
            "attributes": label_attributes(encoded.annotations, f"{sample.uuid}.png"),
        }
        write_json(folder / f"{sample.uuid}.json", payload)
        return encoded.score
