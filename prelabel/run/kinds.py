"""Which steps label a dataset: the one place that looks at its task type.

Every front-end that labels a whole dataset (``run``, ``sync``, ``serve``) asks here, so a
dataset kind is added once: bitmap images (:class:`~prelabel.run.steps.SampleSteps`), bitmap
sequences (:class:`~prelabel.run.sequence_steps.SequenceSteps`), boxes and polygons
(:class:`~prelabel.run.vector_steps.VectorSteps`) and their sequences
(:class:`~prelabel.run.vector_steps.VectorSequenceSteps`).
"""

from __future__ import annotations

from collections.abc import Callable

from prelabel.config import Settings
from prelabel.errors import ConfigError
from prelabel.run.frame_io import SequencePredictor
from prelabel.run.job import RunOptions
from prelabel.run.sequence_steps import SequenceSteps
from prelabel.run.steps import Predictor, SampleSteps
from prelabel.run.vector_steps import VectorSequenceSteps, VectorSteps
from prelabel.segments.client import DatasetInfo, SegmentsApi
from prelabel.segments.statuses import VECTOR_TASK_TYPES
from prelabel.taxonomy import Taxonomy


def steps_for(
    api: SegmentsApi,
    settings: Settings,
    options: RunOptions,
    info: DatasetInfo,
    taxonomy: Taxonomy,
    load_pipeline: Callable[[], Predictor],
) -> SampleSteps:
    """The steps for the dataset's task type: images or sequences, bitmaps or shapes.

    A sequence needs the SAM 2 video model too, which ``load_pipeline`` must offer as its
    ``sequence()`` (:class:`~prelabel.run.models.PipelineLoader` does).
    """
    vector = info.task_type in VECTOR_TASK_TYPES
    if not info.is_sequence:
        if vector:
            return VectorSteps(api, settings, options, taxonomy, load_pipeline, info=info)
        return SampleSteps(api, settings, options, taxonomy, load_pipeline)
    load_sequence = _sequence_loader(load_pipeline, options.dataset)
    if vector:
        return VectorSequenceSteps(
            api,
            settings,
            options,
            taxonomy,
            load_pipeline,
            load_sequence_pipeline=load_sequence,
            info=info,
        )
    return SequenceSteps(
        api, settings, options, taxonomy, load_pipeline, load_sequence_pipeline=load_sequence
    )


def _sequence_loader(
    load_pipeline: Callable[[], Predictor], dataset: str
) -> Callable[[], SequencePredictor]:
    load_sequence: Callable[[], SequencePredictor] | None = getattr(load_pipeline, "sequence", None)
    if load_sequence is None:
        raise ConfigError(
            f"dataset {dataset} is an image sequence; this front-end labels image "
            "datasets only (use `prelabel run`)"
        )
    return load_sequence
