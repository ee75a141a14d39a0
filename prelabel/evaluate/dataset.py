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
* **One driver**: samples go through :func:`~prelabel.run.driver.drive` as a run's do; the
  unit (:class:`ImageScoring`) scores where a run uploads, the sink is a recorder without
  state. A signal (SIGINT, SIGTERM) lets the sample in flight finish and ends the evaluation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from prelabel.config import Settings
from prelabel.errors import RemoteError, SampleError
from prelabel.evaluate.pq import VOID, PanopticFrame, PQAccumulator, PQResult, frame_from_prediction
from prelabel.formats.bitmap import decode_bitmap
from prelabel.progress import NullProgress, Progress
from prelabel.run.driver import drive
from prelabel.run.job import Job, RunOptions
from prelabel.run.lifecycle import Unit
from prelabel.run.outcome import SampleOutcome
from prelabel.run.policy import guarded
from prelabel.run.recorder import Recorder
from prelabel.run.report import RunSummary
from prelabel.run.steps import FrameCallback, Predictor, SampleSteps, UploadCallback
from prelabel.segments.client import SampleRef, SegmentsApi
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
    #: A signal stopped it: the scores cover the samples finished before.
    interrupted: bool = False

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
            "interrupted": self.interrupted,
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
    should_stop: Callable[[], bool] = lambda: False,
) -> DatasetEvaluation:
    """Predict on each human-labeled sample of ``dataset`` and score against its label.

    Samples are taken in the listing's order (oldest first); ``limit`` caps how many
    human-labeled samples are attempted (failures included), so a quick look at a large
    dataset stays quick. The image is fetched and predicted by the run's own steps
    (:class:`~prelabel.run.steps.SampleSteps`, with ``settings``' decoding guard), on the
    run's driver (:func:`~prelabel.run.driver.drive`), and failures follow the run's policy
    (:mod:`prelabel.run.policy`). Once ``should_stop()`` is true no new sample starts; the
    scores cover the samples finished (``interrupted`` says so).

    Raises:
        AuthError: the key was refused.
        RemoteError: the samples cannot be listed, or the server stays unreachable.
        ModelLoadError: the models cannot run at all.
    """
    options = RunOptions(dataset=dataset, labelset=labelset)
    steps = SampleSteps(api, settings or Settings(), options, taxonomy, lambda: pipeline)
    categories = evaluated_categories(taxonomy)
    scoring = ImageScoring(steps, PQAccumulator(categories), frozenset(c.id for c in categories))
    selection = HumanLabeled(api, dataset, labelset, limit)
    failures, summary = score_each(selection, scoring, progress, "evaluate", should_stop)
    return DatasetEvaluation(
        result=scoring.accumulator.result(),
        not_human_labeled=selection.not_human_labeled,
        failures=tuple(failures),
        voided_segments=scoring.voided_segments,
        unannotated_pixels=scoring.unannotated_pixels,
        interrupted=summary.interrupted,
    )


@dataclass
class HumanLabeled:
    """The samples an evaluation scores: those with a human label (:data:`HUMAN_LABEL_STATUSES`),
    in the listing's order, up to ``limit``; counts the listed samples it passed over."""

    api: SegmentsApi
    dataset: str
    labelset: str
    limit: int | None
    not_human_labeled: int = 0

    def __iter__(self) -> Iterator[SampleRef]:
        taken = 0
        for sample in self.api.iter_samples(self.dataset, self.labelset):
            if sample.label_status not in HUMAN_LABEL_STATUSES:
                self.not_human_labeled += 1
                continue
            if self.limit is not None and taken >= self.limit:
                return
            taken += 1
            yield sample


def score_each(
    samples: HumanLabeled,
    unit: Unit,
    progress: Progress | None,
    description: str,
    should_stop: Callable[[], bool],
) -> tuple[list[SampleOutcome], RunSummary]:
    """Every human-labeled sample through ``unit`` on the run's driver, one at a time (the
    scores add up in order), with no state: returns the failures and the summary. Server
    trouble on several samples in a row stops it (RemoteError), as does the first samples all
    failing in the model (the run policy's stops)."""
    failures: list[SampleOutcome] = []

    def note(outcome: SampleOutcome) -> None:
        if outcome.result == "failed":
            failures.append(outcome)

    recorder = Recorder.outcomes_only(progress=progress or NullProgress(), on_outcome=note)
    summary = drive(
        samples,
        unit,
        recorder,
        should_stop=should_stop,
        expected=samples.limit,
        description=description,
    )
    return failures, summary


class ImageScoring:
    """The unit of an image evaluation: the run's fetch and infer, around reading the label
    (check), decoding it (after fetch) and scoring (deliver); and their tallies.

    The label is read and decoded before the (expensive) prediction, so a broken label costs
    no model time; nothing is counted for a sample that fails. The label of a sample in
    flight waits in ``_labels`` / ``_truths`` between the steps.
    """

    def __init__(
        self, steps: SampleSteps, accumulator: PQAccumulator, evaluated: frozenset[int]
    ) -> None:
        self.steps = steps
        self.accumulator = accumulator
        self.evaluated = evaluated
        self.voided_segments = 0
        self.unannotated_pixels = 0
        self._labels: dict[str, tuple[dict[int, int], bytes]] = {}
        self._truths: dict[str, tuple[PanopticFrame, int, int]] = {}

    def load_models(self) -> object:
        return self.steps.load_models()

    def check(self, job: Job) -> Job:
        return guarded(job, self._read_label)

    def fetch(self, job: Job) -> Job:
        return guarded(self.steps.fetch(job), self._decode_label)

    def infer_batch(self, jobs: list[Job], record_frame: FrameCallback | None = None) -> list[Job]:
        return self.steps.infer_batch(jobs)

    def deliver(self, job: Job, record_upload: UploadCallback) -> Job:
        self._labels.pop(job.sample.uuid, None)
        return guarded(job, self._score)

    def _read_label(self, job: Job) -> None:
        labelset, api = self.steps.options.labelset, self.steps.api
        label = api.label_bitmap(job.sample.uuid, labelset)
        if label is None:
            raise sample_failure(
                job, f"the label in {labelset!r} is gone (deleted since the listing)"
            )
        annotations, bitmap_url = label
        if not bitmap_url:
            raise sample_failure(job, "the label has no segmentation bitmap")
        try:
            self._labels[job.sample.uuid] = annotations, api.download(bitmap_url)
        except RemoteError as exc:
            # As for images (segments.samples.load_image): a refused or missing asset is this
            # sample's problem, not the API key's.
            raise sample_failure(job, f"label bitmap download failed: {exc}") from None

    def _decode_label(self, job: Job) -> None:
        if job.image is None:
            raise RuntimeError("decode_label() before fetch()")
        annotations, png = self._labels.pop(job.sample.uuid)
        try:
            id_map = decode_bitmap(png, job.image.size)
        except ValueError as exc:
            raise sample_failure(job, str(exc)) from None
        self._truths[job.sample.uuid] = ground_truth_frame(id_map, annotations, self.evaluated)

    def _score(self, job: Job) -> None:
        truth = self._truths.pop(job.sample.uuid, None)
        if job.prediction is None or truth is None:
            raise RuntimeError("score() before infer()")
        ground_truth, voided, unannotated = truth
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
