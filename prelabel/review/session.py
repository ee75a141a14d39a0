"""The review session: look at predictions, tune prompts and thresholds, measure, push, save.

:mod:`prelabel.review.widgets` (the notebook's UI) is built only on this class, so the notebook
holds no logic of its own and everything it does can be done from code. Pushing goes through
the same safe path as ``prelabel run`` (re-read before write, never over a person's label,
state recorded for resume); measuring is ``prelabel evaluate --dataset``'s evaluation; the
tuned settings are saved as a config ``prelabel run --config`` predicts the same with. On a
``bboxes`` or ``vector`` dataset an item shows the boxes or polygons the label would hold, and a
push writes them with the run's vector steps (one label write, no bitmap).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from prelabel.backends import load_backend, model_sources, option_reader
from prelabel.config import (
    CategoryOptions,
    PipelineSettings,
    Settings,
    describe_validation_error,
    settings_yaml,
)
from prelabel.errors import AuthError, ConfigError, RemoteError, SampleError
from prelabel.evaluate.dataset import DatasetEvaluation, evaluate_dataset
from prelabel.formats.atomic import atomic_file
from prelabel.formats.vector_label import VECTOR_KINDS
from prelabel.pipeline.pipeline import Pipeline
from prelabel.progress import Progress
from prelabel.review.items import ReviewItem
from prelabel.review.push import Accepted, AcceptedPredictions
from prelabel.review.sequences import SequenceReviewItem, predict_sequence
from prelabel.run.driver import drive
from prelabel.run.frame_io import SequencePredictor
from prelabel.run.job import Job, RunOptions
from prelabel.run.outcome import SampleOutcome
from prelabel.run.recorder import Recorder
from prelabel.run.sequence_steps import SequenceSteps
from prelabel.run.steps import SampleSteps
from prelabel.run.vector_steps import VectorSteps
from prelabel.segments.client import SampleRef, SegmentsApi
from prelabel.segments.dataset import check_dataset
from prelabel.segments.samples import select_samples
from prelabel.segments.statuses import VECTOR_TASK_TYPES
from prelabel.state import StateStore
from prelabel.taxonomy import Taxonomy, build_taxonomy, categories_from_task_attributes

M = TypeVar("M", bound=BaseModel)


class ReviewSession:
    """A dataset, its taxonomy and a loaded pipeline, for interactive use.

    Tuning changes :attr:`category_options` and the pipeline's settings; every prediction,
    push, measurement and saved config uses the tuned values, and :meth:`measure` can also
    score the settings the session started with, for a before/after comparison.
    """

    def __init__(
        self,
        api: SegmentsApi,
        dataset: str,
        *,
        labelset: str = "ground-truth",
        settings: Settings | None = None,
        pipeline: Pipeline | None = None,
        models_dir: Path | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.api = api
        self.settings = settings or Settings()
        if pipeline is not None:  # what it predicts with is where tuning starts from
            self.settings = self.settings.model_copy(update={"pipeline": pipeline.settings})
        self.options = RunOptions(dataset=dataset, labelset=labelset)
        self.info, self.taxonomy = check_dataset(
            api, self.settings, dataset, labelset, sequences=True, vectors=True
        )
        if self.info.is_sequence and self.info.task_type in VECTOR_TASK_TYPES:
            raise ConfigError(
                f"dataset {dataset} is {self.info.task_type!r}: the review session takes "
                "bitmap datasets, their sequences and bboxes/vector datasets, not box or "
                "polygon sequences yet (label it with `prelabel run`)"
            )
        #: ``bbox`` or ``polygon`` on a ``bboxes`` or ``vector`` dataset, else ``None``.
        self.kind = VECTOR_KINDS.get(self.info.task_type)
        self.category_options: dict[str, CategoryOptions] = dict(self.settings.categories)
        if pipeline is None:
            pipeline = Pipeline(load_backend(self.settings, models_dir), self.settings.pipeline)
        self.pipeline = pipeline
        self.models_dir = models_dir
        self.state = StateStore.in_dir(state_dir)
        self._initial_taxonomy = self.taxonomy
        #: The sequence pipeline over :attr:`pipeline`, rebuilt when tuning replaces it.
        self._sequence: tuple[Pipeline, SequencePredictor] | None = None

    @classmethod
    def connect(
        cls,
        dataset: str,
        *,
        api_url: str | None = None,
        api_key: str | None = None,
        settings: Settings | None = None,
        **kwargs: object,
    ) -> ReviewSession:
        """Connect with ``api_key`` or ``SEGMENTS_API_KEY``; ``api_url`` may be an emulator."""
        key = api_key or os.environ.get("SEGMENTS_API_KEY", "")
        if not key:
            raise AuthError("no API key: set SEGMENTS_API_KEY or pass api_key=")
        settings = settings or Settings()
        if api_url:
            remote = settings.remote.model_copy(update={"api_url": api_url})
            settings = settings.model_copy(update={"remote": remote})
        api = SegmentsApi.connect(key, settings.remote)
        return cls(api, dataset, settings=settings, **kwargs)  # type: ignore[arg-type]

    def samples(self, limit: int = 10, *, overwrite_prelabels: bool = False) -> list[SampleRef]:
        """The first ``limit`` samples ``prelabel run`` would label."""
        picked = []
        for sample, selected in select_samples(
            self.api,
            self.options.dataset,
            self.options.labelset,
            overwrite_prelabels=overwrite_prelabels,
        ):
            if selected:
                picked.append(sample)
            if len(picked) >= limit:
                break
        return picked

    def tune(self, category: str, **changes: object) -> None:
        """Change one category's prompt, thresholds or ``ignore``, then rebuild the prompts.

        Example: ``session.tune("person", prompt="person . pedestrian", box_threshold=0.4)``.

        Raises:
            ConfigError: a value a config file could not hold either (a threshold above 1, an
                unknown option), so a saved config always loads.
            TaxonomyError: ``category`` is not in the dataset, or every category is ignored.
        """
        current = self.category_options.get(category, CategoryOptions())
        options = {**self.category_options, category: _validated(current, changes)}
        self.taxonomy = self._taxonomy(options, self.pipeline.settings)
        self.category_options = options

    def tune_pipeline(self, **changes: object) -> None:
        """Change pipeline-wide settings (``min_area``, ``points_per_region``, ...).

        The thresholds here are the defaults of every category that sets none of its own, so
        the prompts are rebuilt with them. Raises :class:`ConfigError` as :meth:`tune` does.
        """
        settings = _validated(self.pipeline.settings, changes)
        self.taxonomy = self._taxonomy(self.category_options, settings)
        self.pipeline = Pipeline(self.pipeline.backend, settings)

    def _taxonomy(
        self, options: Mapping[str, CategoryOptions], pipeline: PipelineSettings
    ) -> Taxonomy:
        """What ``prelabel run`` builds from a config with these options (check_dataset)."""
        categories = categories_from_task_attributes(self.info.task_attributes)
        return build_taxonomy(categories, options, pipeline, reader=option_reader(self.settings))

    def tuned_settings(self) -> Settings:
        """The session's settings with everything tuned so far."""
        return self.settings.model_copy(
            update={"pipeline": self.pipeline.settings, "categories": dict(self.category_options)}
        )

    def changes(self) -> list[str]:
        """What tuning changed since the start, one ``where: before -> after`` line each."""
        before, after = self.settings, self.tuned_settings()
        lines = _differences("pipeline", before.pipeline, after.pipeline)
        for name in sorted(set(before.categories) | set(after.categories)):
            old = before.categories.get(name, CategoryOptions())
            lines += _differences(name, old, after.categories.get(name, CategoryOptions()))
        return lines

    def save_config(self, path: Path) -> Path:
        """Write the tuned settings as a YAML config for ``prelabel run --config PATH``.

        Loaded with :func:`~prelabel.config.load_settings`, the file gives a run the same
        taxonomy and pipeline settings, hence the same predictions. It holds every setting of
        the session, the API address included. When the session loaded its models from
        ``models_dir``, their folders are written as the model ids (absolute paths), so the
        file alone finds them from anywhere (``--models`` still overrides). Written atomically.
        """
        settings = self.tuned_settings()
        if self.models_dir is not None:
            sources = model_sources(settings, self.models_dir.expanduser().resolve())
            settings = settings.model_copy(
                update={"models": settings.models.model_copy(update=sources)}
            )
        header = (
            f"Tuned in the review notebook on {self.options.dataset}.\n"
            f"Use: prelabel run --dataset {self.options.dataset} --config {path}"
        )
        with atomic_file(Path(path)) as f:
            f.write(settings_yaml(settings, header))
        return Path(path)

    def measure(
        self, limit: int | None = None, *, tuned: bool = True, progress: Progress | None = None
    ) -> DatasetEvaluation:
        """PQ, SQ and RQ on the samples a person has labeled, as ``prelabel evaluate --dataset``.

        ``tuned=False`` scores the settings the session started with instead, the "before" of
        a before/after comparison. ``limit`` caps the human-labeled samples predicted. Reads
        only; nothing is written. On a box or polygon dataset it refuses (:class:`ConfigError`):
        those are scored with AP by ``prelabel evaluate --dataset``.
        """
        if self.kind is not None:
            raise ConfigError(
                f"measure() scores bitmap labels (PQ); {self.options.dataset} is "
                f"{self.info.task_type!r}: use `prelabel evaluate --dataset` (COCO AP)"
            )
        if tuned:
            pipeline, taxonomy = self.pipeline, self.taxonomy
        else:
            pipeline = Pipeline(self.pipeline.backend, self.settings.pipeline)
            taxonomy = self._initial_taxonomy
        return evaluate_dataset(
            self.api,
            pipeline,
            taxonomy,
            dataset=self.options.dataset,
            labelset=self.options.labelset,
            limit=limit,
            settings=self.tuned_settings() if tuned else self.settings,
            progress=progress,
        )

    def _steps(self, *, overwrite_prelabels: bool = False) -> SampleSteps:
        """The run's steps (an image's or a sequence's) with the current (tuned) taxonomy and
        pipeline."""
        options = replace(self.options, overwrite_prelabels=overwrite_prelabels)
        settings = self.settings.model_copy(update={"pipeline": self.pipeline.settings})
        if self.kind is not None:  # the label holds boxes or polygons
            return VectorSteps(
                self.api, settings, options, self.taxonomy, lambda: self.pipeline, info=self.info
            )
        if self.info.is_sequence:
            return SequenceSteps(
                self.api,
                settings,
                options,
                self.taxonomy,
                lambda: self.pipeline,
                load_sequence_pipeline=self.sequence_pipeline,
            )
        return SampleSteps(self.api, settings, options, self.taxonomy, lambda: self.pipeline)

    def sequence_pipeline(self) -> SequencePredictor:
        """The SAM 2 tracker over the session's (tuned) pipeline, for a sequence dataset."""
        if self._sequence is None or self._sequence[0] is not self.pipeline:
            from prelabel.pipeline.sequence import SequencePipeline

            settings = self.tuned_settings()
            self._sequence = (
                self.pipeline,
                SequencePipeline(self.pipeline, settings, self.models_dir),
            )
        return self._sequence[1]

    def predict(self, sample: SampleRef) -> ReviewItem:
        """Download and predict one image sample, through the same steps as ``prelabel run``
        (a sequence dataset's samples: :meth:`predict_sequence`).

        Raises:
            SampleError: the sample failed (its image cannot be read, ...), with the reason.
            ConfigError: the dataset is an image-sequence dataset.
        """
        if self.info.is_sequence:
            raise ConfigError(
                f"{self.options.dataset} is an image-sequence dataset: use predict_sequence()"
            )
        steps = self._steps()
        job = steps.fetch(Job(sample))
        image = job.image
        job = steps.infer(job)
        if job.outcome is not None or image is None or job.prediction is None:
            reason = job.outcome.reason if job.outcome else "nothing was predicted"
            raise SampleError(
                f"{sample.name}: {reason}", sample_uuid=sample.uuid, sample_name=sample.name
            )
        return ReviewItem(
            sample=sample,
            image=image,
            prediction=job.prediction,
            taxonomy=self.taxonomy,
            kind=self.kind,
            vector=self.settings.vector,
        )

    def predict_sequence(self, sample: SampleRef) -> SequenceReviewItem:
        """Download and predict every frame of a sequence sample, as ``prelabel run`` does
        (SAM 2 tracks objects across frames; see :mod:`prelabel.review.sequences`).

        Raises:
            SampleError: the sequence failed (a frame cannot be read, ...), with the reason.
        """
        pipeline, max_pixels = self.sequence_pipeline(), self.pipeline.settings.max_image_pixels
        return predict_sequence(self.api, pipeline, self.taxonomy, sample, max_pixels=max_pixels)

    def push(
        self,
        items: Iterable[ReviewItem | SequenceReviewItem],
        *,
        overwrite_prelabels: bool = False,
    ) -> list[SampleOutcome]:
        """Upload accepted predictions as PRELABELED labels, safely (see
        :mod:`prelabel.segments.upload`), and return every item's outcome.

        Each item is admitted as ``prelabel run`` admits a sample: it takes the sample's lease
        (one another worker holds is skipped) and honours its resume record (a parked sample, a
        label of ours a person deleted); the accepted prediction is what is uploaded, never a
        bitmap an earlier run left. One failing item fails only itself. When the server stays
        down (the failure policy's transient stop), the items not yet tried are returned as
        failed with that reason.
        """
        items = list(items)
        steps = self._steps(overwrite_prelabels=overwrite_prelabels)
        outcomes: list[SampleOutcome] = []
        recorder = Recorder(
            self.state, steps.options, self.settings.worker, on_outcome=outcomes.append
        )
        try:
            accepted = AcceptedPredictions(steps, [_accepted(item) for item in items])
            drive([item.sample for item in items], accepted, recorder)
        except RemoteError as exc:  # the transient stop: the server stays down
            for item in items[len(outcomes) :]:
                job = Job(item.sample)
                job.finish("failed", reason=f"not pushed: {exc}", record_state=False)
                assert job.outcome is not None
                outcomes.append(job.outcome)
        return outcomes

    def close(self) -> None:
        self.state.close()
        self.api.close()


def _accepted(item: ReviewItem | SequenceReviewItem) -> tuple[SampleRef, Accepted]:
    if isinstance(item, SequenceReviewItem):
        return item.sample, item.predictions
    return item.sample, item.prediction


def _validated(current: M, changes: Mapping[str, object]) -> M:
    """``current`` with ``changes``, checked as a config file's values would be."""
    try:
        return type(current).model_validate({**current.model_dump(), **changes})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, type(current))) from None


def _differences(where: str, before: BaseModel, after: BaseModel) -> list[str]:
    old, new = before.model_dump(), after.model_dump()
    return [f"{where}.{key}: {old[key]!r} -> {new[key]!r}" for key in new if old[key] != new[key]]
