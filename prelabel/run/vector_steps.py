"""The steps for box and polygon datasets (``bboxes``, ``vector``): the image steps, less the
bitmap.

Check, fetch, infer and write are :class:`~prelabel.run.steps.SampleSteps`' own, so the safety
rules (re-read before the write, never over a person's label), retries, resume, reports and
exit codes are the same as for bitmap datasets. Only two steps differ:

- **encode** turns the panoptic map into boxes or polygons
  (:func:`~prelabel.formats.vector_label.encode_vector_label`);
- **upload** has nothing to upload: the label's attributes are the whole label, so it only
  makes them the pending label (``asset_url`` :data:`~prelabel.segments.upload.NO_ASSET`),
  which the recorder keeps like an uploaded bitmap's, so a rerun after a kill writes it
  without predicting again. One label write per sample.
"""

from __future__ import annotations

from collections.abc import Callable

from prelabel.config import Settings
from prelabel.formats.atomic import write_json
from prelabel.formats.vector_label import VECTOR_KINDS, encode_vector_label, score_categories
from prelabel.run.job import Job, RunOptions
from prelabel.run.steps import Predictor, SampleSteps
from prelabel.segments.client import DatasetInfo, SegmentsApi
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
        """No asset: the encoded label becomes the label to write."""
        encoded = job.vector_label
        if encoded is None:
            raise RuntimeError("deliver() before infer()")
        job.vector_label = None
        return PendingLabel(asset_url=NO_ASSET, attributes=encoded.attributes, score=encoded.score)

    def _save_dry_run(self, job: Job) -> float:
        """Save the label that would be written as ``output_dir/dry-run/<uuid>.json``."""
        encoded, sample = job.vector_label, job.sample
        if encoded is None:
            raise RuntimeError("deliver() before infer()")
        folder = self.options.output_dir / "dry-run"
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
