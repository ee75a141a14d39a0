"""The steps for box and polygon datasets (``bboxes``, ``vector``, ``image-vector-sequence``):
the image and sequence steps, less the bitmaps.

Check, fetch, infer and write are :class:`~prelabel.run.steps.SampleSteps`' own, so the safety
rules (re-read before the write, never over a person's label), retries, resume, reports and
exit codes are the same as for bitmap datasets. Only two steps differ:

- **encode** turns the panoptic map into boxes or polygons
  (:func:`~prelabel.formats.vector_label.encode_vector_label`);
- **upload** has nothing to upload: the label's attributes are the whole label, so it only
  makes them the pending label (``asset_url`` :data:`~prelabel.segments.upload.NO_ASSET`),
  which the recorder keeps like an uploaded bitmap's, so a rerun after a kill writes it
  without predicting again. One label write per sample.

:class:`VectorSequenceSteps` does the same for sequences: the frames stream through the
sequence pipeline (keyframes, SAM 2 tracks with stable ids) and each frame's shapes are kept,
nothing uploaded; the label is still one write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prelabel.config import Settings
from prelabel.formats.atomic import write_json
from prelabel.formats.label import label_score
from prelabel.formats.sequence_label import pooled_score
from prelabel.formats.vector_label import (
    VECTOR_KINDS,
    EncodedVectorLabel,
    encode_vector_label,
    score_categories,
    vector_frame,
    vector_sequence_attributes,
)
from prelabel.run.frame_io import FrameIO, SequencePredictor
from prelabel.run.job import Job, RunOptions
from prelabel.run.sequence_steps import SequenceSteps
from prelabel.run.steps import FrameCallback, Predictor, SampleSteps
from prelabel.segments.client import DatasetInfo, SegmentsApi
from prelabel.segments.samples import load_frame
from prelabel.segments.statuses import PRELABELED
from prelabel.segments.upload import NO_ASSET, PendingLabel
from prelabel.taxonomy import Taxonomy


class VectorSteps(SampleSteps):
    """:class:`SampleSteps` writing boxes (``bboxes``) or polygons (``vector``)."""

    def __init__(
        self,
        api: SegmentsApi,
        settings: Settings,
        options: RunOptions,
        taxonomy: Taxonomy,
        load_pipeline: Callable[[], Predictor],
        *,
        info: DatasetInfo,
    ) -> None:
        super().__init__(api, settings, options, taxonomy, load_pipeline)
        #: ``bbox`` or ``polygon``, from the dataset's task type.
        self.kind = VECTOR_KINDS[info.task_type]
        #: Categories whose ``settings.vector.score_attribute`` receives each object's score.
        self.scored_categories = score_categories(
            info.task_attributes, settings.vector.score_attribute
        )

    def _encode(self, job: Job) -> None:
        if job.prediction is not None:
            job.vector_label = encode_vector_label(
                job.prediction,
                self.kind,
                self.settings.vector,
                scored_categories=self.scored_categories,
            )
            job.segments = job.vector_label.objects
            job.prediction = None

    def _upload(self, job: Job) -> PendingLabel:
        return _pending(job)

    def _save_dry_run(self, job: Job) -> float:
        return _save_dry_run(job, self.options)


class VectorSequenceSteps(SequenceSteps):
    """:class:`SequenceSteps` for ``image-vector-sequence`` datasets: per frame, each track's
    box or polygon (``vector.sequence_type``) under its track id; no bitmap."""

    def __init__(
        self,
        api: SegmentsApi,
        settings: Settings,
        options: RunOptions,
        taxonomy: Taxonomy,
        load_pipeline: Callable[[], Predictor],
        *,
        load_sequence_pipeline: Callable[[], SequencePredictor],
        info: DatasetInfo,
    ) -> None:
        super().__init__(
            api,
            settings,
            options,
            taxonomy,
            load_pipeline,
            load_sequence_pipeline=load_sequence_pipeline,
        )
        self.kind = settings.vector.sequence_type
        self.scored_categories = score_categories(
            info.task_attributes, settings.vector.score_attribute
        )

    def _stream(self, job: Job, record_frame: FrameCallback) -> None:
        """Predict every frame and keep its shapes; the label is made once all are in."""
        if job.pending is not None or job.finished:
            return
        sample, worker = job.sample, self.settings.worker
        max_pixels = self.settings.pipeline.max_image_pixels
        frames: list[dict[str, Any]] = []
        scores: list[tuple[float, float]] = []
        io = FrameIO(overlapped=worker.engine == "overlapped", in_flight=1, threads=1)
        with io:
            images = io.frames(
                lambda index: load_frame(self.api, sample, index, max_pixels=max_pixels),
                len(sample.frames),
            )
            for index, predicted in enumerate(
                self.sequence_pipeline.predict_frames(images, self.taxonomy)
            ):
                prediction = predicted.prediction
                frames.append(
                    vector_frame(
                        prediction,
                        self.kind,
                        self.settings.vector,
                        scored_categories=self.scored_categories,
                        timestamp=sample.frames[index].timestamp,
                    )
                )
                scores.append((label_score(prediction), sum(s.area for s in prediction.segments)))
        if len(frames) != len(sample.frames):
            raise RuntimeError(
                f"the sequence pipeline gave {len(frames)} predictions for "
                f"{len(sample.frames)} frames"
            )
        tracks = {a["track_id"] for frame in frames for a in frame["annotations"]}
        job.vector_label = EncodedVectorLabel(
            vector_sequence_attributes(frames), pooled_score(scores), len(tracks)
        )
        job.segments = len(tracks)

    def _upload(self, job: Job) -> PendingLabel:
        return _pending(job)

    def _save_dry_run(self, job: Job) -> float:
        return _save_dry_run(job, self.options)


def _pending(job: Job) -> PendingLabel:
    """No asset: the encoded label becomes the label to write."""
    encoded = job.vector_label
    if encoded is None:
        raise RuntimeError("deliver() before infer()")
    job.vector_label = None
    return PendingLabel(asset_url=NO_ASSET, attributes=encoded.attributes, score=encoded.score)


def _save_dry_run(job: Job, options: RunOptions) -> float:
    """Save the label that would be written as ``output_dir/dry-run/<uuid>.json``."""
    encoded, sample = job.vector_label, job.sample
    if encoded is None:
        raise RuntimeError("deliver() before infer()")
    folder = options.output_dir / "dry-run"
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "sample_uuid": sample.uuid,
        "sample_name": sample.name,
        "label_status": PRELABELED,
        "score": encoded.score,
        "attributes": encoded.attributes,
    }
    write_json(folder / f"{sample.uuid}.json", payload)
    return encoded.score
