"""The ``grounded_sam`` back-end (the default): Grounding DINO for things, SAM for masks, CLIPSeg
for stuff. Importing this package loads nothing; :func:`create` imports torch and transformers.

Only this package imports these models' transformers classes (tests/test_architecture.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prelabel.backends.grounded_sam.spec import SPEC

__all__ = ["SPEC", "create"]

if TYPE_CHECKING:
    from prelabel.backends.grounded_sam.backend import GroundedSam
    from prelabel.config import Settings


def create(settings: Settings, models_dir: Path | None) -> GroundedSam:
    """Load the three models (``models.grounding_dino``, ``sam``, ``clipseg`` or ``--models
    DIR``) and wrap them."""
    from prelabel.backends.grounded_sam.backend import GroundedSam
    from prelabel.backends.grounded_sam.loading import load_models

    return GroundedSam(load_models(settings.models, models_dir))
