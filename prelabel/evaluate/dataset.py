"""Evaluate the pipeline on a dataset's human-labeled samples: PQ, SQ and RQ, nothing uploaded.

This is how a team tunes thresholds and prompts before a run: predict on samples a person has
already labeled and score the predictions against those labels with :mod:`prelabel.evaluate.pq`.

* **Which samples**: those whose label in the labelset is LABELED, REVIEWED or VERIFIED
  (:data:`HUMAN_LABEL_STATUSES`). A PRELABELED label is a model's guess, and one in progress,
  rejected or skipped is not an answer a person stands behind; scoring against them would be
  scoring the model against itself or against half-done work.
* **Read-only**: only GET requests (the listing, each label, the images and bitmaps). Nothing is
  uploaded or written, so evaluating can never disturb a dataset people are working on.
* **Categories**: the evaluated categories are those the pipeline is asked for, i.e. the
  dataset's categories minus the ones the config ignores. A ground-truth segment of any other
  category (ignored in the config, or an id the dataset no longer defines) is turned into
  unlabeled pixels, VOID: the model was not asked for it, so neither missing it nor predicting
  something else there should count. Likewise, pixels whose id has no annotation (a bitmap and
  annotation list out of step) are VOID rather than an error, since they say nothing about a
  category. Both are counted in :class:`DatasetEvaluation`, so a surprising number shows.
* **Failures are per sample**: a missing or unreadable bitmap, a bitmap of the wrong size or
  format, an image that cannot be loaded. The sample is logged with its name and the reason,
  recorded in :attr:`DatasetEvaluation.failures`, and the evaluation goes on. A refused key
  stops at once, as do several samples in a row failing on server trouble (the server is down,
  and a PQ over whatever got through would mislead) and the first samples all failing with one
  model error (the run policy's :class:`~prelabel.run.policy.RunStop`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from prelabel.config import Settings
from prelabel.errors import RemoteError, SampleError
from prelabel.evaluate.pq import VOID, PanopticFrame, PQAccumulator, PQResult, frame_from_prediction
from prelabel.formats.bitmap import decode_bitmap
from prelabel.progress import NullProgress, Progress
from prelabel.run.job import Job, RunOptions
from prelabel.run.outcome import SampleOutcome
from prelabel.run.policy import RunStop, guarded
from prelabel.run.steps import Predictor, SampleSteps
from prelabel.segments.client import SegmentsApi
from prelabel.segments.statuses import HUMAN_LABEL_STATUSES
from prelabel.taxonomy import Category, Taxonomy

__all__ = [
    "HUMAN_LABEL_STATUSES",
    "DatasetEvaluation",
    "Predictor",
    "evaluate_dataset",
    "evaluated_categories",
    "evaluation_meta",
    "ground_truth_frame",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetEvaluation:
    """The scores of one evaluation plus what it needs to be read honestly.

    ``result.images`` samples were scored. ``not_human_labeled`` samples were listed but
    skipped for their status; ``failures`` (outcomes with the reason) were selected but not
    scored. ``voided_segments`` counts ground-truth segments (with pixels) whose category is
    not evaluated, ``unannotated_pixels`` the ground-truth pixels whose id has no annotation;
    both were treated as unlabeled.
    """

    result: PQResult
    not_human_labeled: int = 0
    failures: tuple[SampleOutcome, ...] = ()
    voided_segments: int = 0
    unannotated_pixels: int = 0

    @property
    def pq(self) -> PQResult:
        return self.result

    @property
    def evaluated(self) -> int:
        """Samples scored."""
        return self.result.images

    def as_meta(self) -> dict[str, Any]:
        """The fields beside the PQ numbers in the JSON result (see ``write_result``)."""
        return {
            "samples": {
                "evaluated": self.result.images,
                "failed": len(self.failures),
                "not_human_labeled": self.not_human_labeled,
            },
            "ground_truth_voided": {
                "segments_of_unevaluated_categories": self.voided_segments,
                "pixels_without_annotation": self.unannotated_pixels,
            },
            "failures": [
                {"sample_uuid": f.sample_uuid, "sample_name": f.sample_name, "reason": f.reason}
                for f in self.failures
            ],
        }


class Evaluation(Protocol):
    """What :func:`evaluation_meta` needs of an evaluation of images or of sequences."""

    def as_meta(self) -> dict[str, Any]: ...


def evaluation_meta(
    evaluation: Evaluation,
    taxonomy: Taxonomy,
    settings: Settings,
    *,
    dataset: str,
    labelset: str,
    limit: int | None,
    config_path: Path | None,
) -> dict[str, Any]:
    """What the result file records beside the scores, so two configs' results can be told
    apart later: the inputs, the thresholds scored, what was ignored, what failed."""
    evaluated = {c.id for c in evaluated_categories(taxonomy)}
    return {
        "dataset": dataset,
        "labelset": labelset,
        "label_statuses": sorted(HUMAN_LABEL_STATUSES),
        "limit": limit,
        "config": None if config_path is None else str(config_path),
        "pipeline": settings.pipeline.model_dump(mode="json"),
        "ignored_categories": [c.name for c in taxonomy.categories if c.id not in evaluated],
        **evaluation.as_meta(),
    }


def evaluated_categories(taxonomy: Taxonomy) -> tuple[Category, ...]:
    """The dataset's categories that the pipeline is asked for, in the dataset's order.

    Categories the config ignores are left out: scoring them would only report the model
    missing what it was told not to look for.
    """
    prompted = {p.category_id for p in taxonomy.prompts}
    return tuple(c for c in taxonomy.categories if c.id in prompted)


def evaluate_dataset(
    api: SegmentsApi,
    pipeline: Predictor,
    taxonomy: Taxonomy,
    *,
    dataset: str,
    labelset: str = "ground-truth",
    limit: int | None = None,
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> DatasetEvaluation:
    """Predict on each human-labeled sample of ``dataset`` and score against its label.

    Samples are taken in the listing's order (oldest first); ``limit`` caps how many
    human-labeled samples are attempted (failures included), so a quick look at a large
    dataset stays quick. The image is fetched and predicted by the run's own steps
    (:class:`~prelabel.run.steps.SampleSteps`, with ``settings``' decoding guard), and
    failures follow the run's policy (:mod:`prelabel.run.policy`).

    Raises:
        AuthError: the key was refused.
        RemoteError: the samples cannot be listed, or the server stays unreachable.
        ModelLoadError: the models cannot run at all.
    """
    progress = progress or NullProgress()
    options = RunOptions(dataset=dataset, labelset=labelset)
    steps = SampleSteps(api, settings or Settings(), options, taxonomy, lambda: pipeline)
    categories = evaluated_categories(taxonomy)
    scoring = _Scoring(PQAccumulator(categories), frozenset(c.id for c in categories))

    def evaluate_one(job: Job) -> Job:
        job = guarded(job, lambda j: scoring.read_label(api, labelset, j))
        job = guarded(steps.fetch(job), scoring.decode_label)
        return guarded(steps.infer(job), scoring.score)

    scoring.not_human_labeled, failures = each_human_label(
        api,
        dataset,
        labelset,
        evaluate_one,
        limit=limit,
        scored=lambda: scoring.accumulator.images,
        progress=progress,
        description="evaluate",
    )
    return DatasetEvaluation(
        result=scoring.accumulator.result(),
        not_human_labeled=scoring.not_human_labeled,
        failures=tuple(failures),
        voided_segments=scoring.voided_segments,
        unannotated_pixels=scoring.unannotated_pixels,
    )


def each_human_label(
    api: SegmentsApi,
    dataset: str,
    labelset: str,
    evaluate_one: Callable[[Job], Job],
    *,
    limit: int | None,
    scored: Callable[[], int],
    progress: Progress,
    description: str,
) -> tuple[int, list[SampleOutcome]]:
    """Every human-labeled sample through ``evaluate_one`` (which runs its steps under the
    policy), up to ``limit`` attempted; returns how many listed samples were not human-labeled
    and the failures. Server trouble on several samples in a row stops it (RemoteError)."""
    stop, not_human = RunStop(), 0
    failures: list[SampleOutcome] = []
    progress.start(limit, description)
    try:
        for sample in api.iter_samples(dataset, labelset):
            if sample.label_status not in HUMAN_LABEL_STATUSES:
                not_human += 1
                continue
            if limit is not None and scored() + len(failures) >= limit:
                break
            job = evaluate_one(Job(sample))
            assert job.outcome is not None
            if job.outcome.result == "failed":
                failures.append(job.outcome)
                progress.note(failed=len(failures))
            progress.advance()
            stop.observe(job.outcome, model_error=job.model_error)
    finally:
        stop.close()  # logs model errors held back while the first samples were watched
        progress.close()
    return not_human, failures


@dataclass
class _Scoring:
    """The evaluation's steps around the run's fetch and infer, and their tallies.

    The label is read and decoded before the (expensive) prediction, so a broken label costs
    no model time; nothing is counted for a sample that fails. One sample at a time: the
    current sample's label waits in ``_png`` / ``_truth`` between the steps.
    """

    accumulator: PQAccumulator
    evaluated: frozenset[int]
    not_human_labeled: int = 0
    voided_segments: int = 0
    unannotated_pixels: int = 0
    _png: bytes = b""
    _annotations: dict[int, int] = field(default_factory=dict)
    _truth: tuple[PanopticFrame, int, int] | None = None

    def read_label(self, api: SegmentsApi, labelset: str, job: Job) -> None:
        self._truth = None
        label = api.label_bitmap(job.sample.uuid, labelset)
        if label is None:
            raise sample_failure(
                job, f"the label in {labelset!r} is gone (deleted since the listing)"
            )
        self._annotations, bitmap_url = label
        if not bitmap_url:
            raise sample_failure(job, "the label has no segmentation bitmap")
        try:
            self._png = api.download(bitmap_url)
        except RemoteError as exc:
            # As for images (segments.samples.load_image): a refused or missing asset is this
            # sample's problem, not the API key's.
            raise sample_failure(job, f"label bitmap download failed: {exc}") from None

    def decode_label(self, job: Job) -> None:
        if job.image is None:
            raise RuntimeError("decode_label() before fetch()")
        try:
            id_map = decode_bitmap(self._png, job.image.size)
        except ValueError as exc:
            raise sample_failure(job, str(exc)) from None
        self._truth = ground_truth_frame(id_map, self._annotations, self.evaluated)

    def score(self, job: Job) -> None:
        if job.prediction is None or self._truth is None:
            raise RuntimeError("score() before infer()")
        ground_truth, voided, unannotated = self._truth
        self.accumulator.add(frame_from_prediction(job.prediction), ground_truth)
        self.voided_segments += voided
        self.unannotated_pixels += unannotated
        job.finish("evaluated")


def sample_failure(job: Job, reason: str) -> SampleError:
    """The error that fails ``job``'s sample with ``reason`` (named in the report)."""
    return SampleError(reason, sample_uuid=job.sample.uuid, sample_name=job.sample.name)


def ground_truth_frame(
    id_map: npt.NDArray[np.uint32], annotations: Mapping[int, int], evaluated: Set[int]
) -> tuple[PanopticFrame, int, int]:
    """A person's label as the evaluation sees it, with what had to be made VOID.

    Pixels whose id has no annotation, and segments whose category is not in ``evaluated``,
    become VOID (0), i.e. unlabeled: see the module docstring for why. Returns the frame, the
    number of voided segments that had pixels, and the number of pixels without annotation.
    """
    present = [int(i) for i in np.unique(id_map) if i != VOID]
    kept = {i: c for i, c in annotations.items() if c in evaluated}
    unannotated = [i for i in present if i not in annotations]
    voided = [i for i in present if i in annotations and i not in kept]
    unannotated_pixels = int(np.isin(id_map, unannotated).sum()) if unannotated else 0
    if unannotated or voided:
        id_map = np.where(np.isin(id_map, unannotated + voided), VOID, id_map).astype(np.uint32)
    voided_segments = len(voided)
    return PanopticFrame(id_map=id_map, segments=kept), voided_segments, unannotated_pixels
