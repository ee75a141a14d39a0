"""The steps for an image-sequence sample: frames stream through the model and out to the server.

A sequence can hold hundreds of frames, so nothing is held per frame beyond its small record:
frame *i* is downloaded, predicted (the sequence pipeline tracks objects across frames, see
:mod:`prelabel.pipeline.sequence`), encoded and its bitmap uploaded, with the download of the
next frame and the uploads of the last ones overlapping the model on the ``overlapped`` engine
(:mod:`prelabel.run.frame_io`). Each uploaded frame is reported through the recorder's
``record_frame`` callback, so a run killed half-way reuses those bitmaps (the frames are
predicted again, the tracker needs them, but not uploaded again). Once every frame is up the
label is one write, with the same safety as an image's: :meth:`SampleSteps.deliver` re-reads
the label and never writes over a person's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

from prelabel.config import Settings
from prelabel.formats.atomic import write_json
from prelabel.formats.label import EncodedLabel, encode_label
from prelabel.formats.sequence_label import frame_label, label_object_count
from prelabel.panoptic import PanopticPrediction
from prelabel.run.frame_io import FrameIO, SequencePredictor, stream_frames
from prelabel.run.job import Job, RunOptions, UploadedFrame, sequence_label_score
from prelabel.run.policy import guarded
from prelabel.run.steps import FrameCallback, Predictor, SampleSteps
from prelabel.segments.client import SegmentsApi
from prelabel.segments.samples import load_frame
from prelabel.segments.statuses import PRELABELED
from prelabel.segments.upload import PendingLabel, pending_sequence_label, upload_frame
from prelabel.taxonomy import Taxonomy


class SequenceSteps(SampleSteps):
    """:class:`SampleSteps` for ``image-segmentation-sequence`` datasets.

    ``check`` and ``deliver``'s label write are the image steps'; ``fetch`` only checks the
    frame list (frames are read while predicting), ``infer`` streams every frame through the
    sequence pipeline and uploads its bitmap.
    """

    def __init__(
        self,
        api: SegmentsApi,
        settings: Settings,
        options: RunOptions,
        taxonomy: Taxonomy,
        load_pipeline: Callable[[], Predictor],
        *,
        load_sequence_pipeline: Callable[[], SequencePredictor],
    ) -> None:
        super().__init__(api, settings, options, taxonomy, load_pipeline)
        self._load_sequence_pipeline = load_sequence_pipeline
        self._sequence_pipeline: SequencePredictor | None = None

    @property
    def sequence_pipeline(self) -> SequencePredictor:
        if self._sequence_pipeline is None:
            self._sequence_pipeline = self._load_sequence_pipeline()
        return self._sequence_pipeline

    def load_models(self) -> object:
        """The sequence pipeline (SAM 2 and the keyframe back-end), what a sequence needs."""
        return self.sequence_pipeline

    def infer_batch(self, jobs: list[Job], record_frame: FrameCallback | None = None) -> list[Job]:
        """Each sequence on its own: a sequence is already many model calls."""
        report = record_frame or (lambda job, index: None)
        return [guarded(job, lambda j: self._stream(j, report), in_model=True) for job in jobs]

    def _fetch(self, job: Job) -> None:
        if job.pending is None and not job.sample.frames:
            raise ValueError("the sequence has no frames")

    def _stream(self, job: Job, record_frame: FrameCallback) -> None:
        if job.pending is not None or job.finished:
            return
        sample = job.sample
        max_pixels = self.settings.pipeline.max_image_pixels
        with self._frame_io() as io:
            streamed = stream_frames(
                self.sequence_pipeline,
                self.taxonomy,
                lambda index: load_frame(self.api, sample, index, max_pixels=max_pixels),
                len(sample.frames),
                io,
            )
            frames = ((frame.index, frame.predicted.prediction) for frame in streamed)
            self._put_frames(job, frames, io, record_frame)

    def put_frames(
        self,
        job: Job,
        predictions: Iterable[tuple[int, PanopticPrediction]],
        record_frame: FrameCallback,
    ) -> None:
        """Upload (or with ``dry_run`` save) the given frame predictions, each reported to
        ``record_frame``: the review push's accepted frames, which need no model."""
        with self._frame_io() as io:
            self._put_frames(job, predictions, io, record_frame)

    def _frame_io(self) -> FrameIO:
        worker = self.settings.worker
        return FrameIO(
            overlapped=worker.engine == "overlapped",
            in_flight=worker.deliver_queue,
            threads=worker.deliver_workers,
        )

    def _put_frames(
        self,
        job: Job,
        predictions: Iterable[tuple[int, PanopticPrediction]],
        io: FrameIO,
        record_frame: FrameCallback,
    ) -> None:
        """Each frame's bitmap up behind the model (``io``), unless an earlier run's record of
        the same frame image is reused; waits for every upload."""
        empty_urls: dict[tuple[int, int], str] = {}
        for index, prediction in predictions:
            frame = job.sample.frames[index]
            reused = job.frames.get(index)
            if reused is not None and reused.image_url == frame.image_url:
                continue
            encoded = encode_label(prediction)
            if self.options.dry_run:
                url = self._save_dry_run_frame(job, index, encoded.png)
                label = frame_label(encoded, url, frame.timestamp)
                job.frames[index] = UploadedFrame(
                    label, encoded.score, frame.image_url, encoded.area
                )
                continue
            upload = partial(
                self._upload_frame, job, index, encoded, prediction.size, empty_urls, record_frame
            )
            if encoded.annotations:
                io.upload(upload)
            else:  # one all-zero bitmap per size, shared: uploaded in line, once
                upload()
        io.drain()

    def _upload_frame(
        self,
        job: Job,
        index: int,
        encoded: EncodedLabel,
        size: tuple[int, int],
        empty_urls: dict[tuple[int, int], str],
        record_frame: FrameCallback,
    ) -> None:
        """Upload one frame's bitmap and record it (may run on an upload thread)."""
        frame = job.sample.frames[index]
        label = upload_frame(
            self.api,
            encoded,
            size=size,
            filename=f"{job.sample.uuid}-{index:05d}.png",
            timestamp=frame.timestamp,
            empty_urls=empty_urls,
        )
        job.frames[index] = UploadedFrame(label, encoded.score, frame.image_url, encoded.area)
        record_frame(job, index)

    def _upload(self, job: Job) -> PendingLabel:
        """The frames are up already: the label is their list, in the sample's order."""
        frames = [job.frames[i] for i in range(len(job.sample.frames))]
        score = sequence_label_score(frames)
        pending = pending_sequence_label(job.sample, [frame.label for frame in frames], score)
        job.segments = label_object_count(pending.attributes)
        return pending

    def _save_dry_run_frame(self, job: Job, index: int, png: bytes) -> str:
        folder = self.options.output_dir / "dry-run" / job.sample.uuid
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"frame-{index:05d}.png"
        path.write_bytes(png)
        return f"{job.sample.uuid}/{path.name}"

    def _save_dry_run(self, job: Job) -> float:
        pending = self._upload(job)
        payload = {
            "sample_uuid": job.sample.uuid,
            "sample_name": job.sample.name,
            "label_status": PRELABELED,
            "score": pending.score,
            "attributes": pending.attributes,
        }
        write_json(self.options.output_dir / "dry-run" / f"{job.sample.uuid}.json", payload)
        return pending.score
