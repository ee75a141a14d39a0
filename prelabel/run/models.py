"""Loading the pipeline for a run: once, and only when a sample needs a prediction."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prelabel.config import Settings

if TYPE_CHECKING:
    from prelabel.pipeline.pipeline import Pipeline
    from prelabel.pipeline.sequence import SequencePipeline


class PipelineLoader:
    """Builds the pipeline on first call and returns the same one after.

    torch and transformers are imported only then: a run that stops at a key or config
    problem, or has nothing to do, never needs them; sync reuses one loader across cycles.
    :meth:`sequence` adds the SAM 2 video model for image-sequence datasets, on the same
    image pipeline (an image dataset never loads it).
    """

    def __init__(self, settings: Settings, models_dir: Path | None) -> None:
        self.settings = settings
        self.models_dir = models_dir
        self._pipeline: Pipeline | None = None
        self._sequence: SequencePipeline | None = None

    def __call__(self) -> Pipeline:
        if self._pipeline is None:
            from prelabel.backends import load_backend
            from prelabel.pipeline.pipeline import Pipeline

            # Logs a warning when tiny random-weight models are in use.
            backend = load_backend(self.settings, self.models_dir)
            self._pipeline = Pipeline(backend, self.settings.pipeline)
        return self._pipeline

    def sequence(self) -> SequencePipeline:
        if self._sequence is None:
            from prelabel.pipeline.sequence import SequencePipeline

            self._sequence = SequencePipeline(self(), self.settings, self.models_dir)
        return self._sequence


def pipeline_loader(settings: Settings, models_dir: Path | None) -> PipelineLoader:
    """The loader of a run's models (see :class:`PipelineLoader`)."""
    return PipelineLoader(settings, models_dir)
