"""Loading the pipeline for a run: once, and only when a sample needs a prediction."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from prelabel.config import Settings

if TYPE_CHECKING:
    from prelabel.pipeline.pipeline import Pipeline


def pipeline_loader(settings: Settings, models_dir: Path | None) -> Callable[[], Pipeline]:
    """A loader that builds the pipeline on first call and returns the same one after.

    torch and transformers are imported only then: a run that stops at a key or config
    problem, or has nothing to do, never needs them; sync reuses one loader across cycles.
    """
    loaded: list[Pipeline] = []

    def load() -> Pipeline:
        if not loaded:
            from prelabel.pipeline.pipeline import Pipeline

            # Logs a warning when tiny random-weight models are in use.
            loaded.append(Pipeline.load(settings, models_dir))
        return loaded[0]

    return load
