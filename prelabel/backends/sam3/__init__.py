"""The ``sam3`` back-end: SAM 3 alone makes the panoptic label, text prompts giving instance
masks (things) and the semantic head giving stuff. Importing this package loads nothing;
:func:`create` imports torch and transformers.

Modules, lowest first: :mod:`.spec` (what the back-end reads, no torch), :mod:`.loading`
(weights and tokenizer through the shared loader, device and dtype), :mod:`.processing` (pre-
and post-processing written here, because transformers' ``Sam3ImageProcessor`` needs
torchvision), :mod:`.predictor` (one vision pass per image, cached text embeddings, prompts in
batches of K), :mod:`.candidates` (pure functions from predictions to
:class:`~prelabel.panoptic.MaskCandidate`), :mod:`.session` (one encoded image's things and
stuff), :mod:`.backend` (the seam's adapter, the only module reading the project's settings) and
:mod:`.tiny` (a tiny random SAM 3 for tests). Only this package imports ``Sam3Model``
(tests/test_architecture.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prelabel.backends import layout
from prelabel.backends.sam3.spec import SPEC

__all__ = ["SPEC", "create"]

if TYPE_CHECKING:
    from prelabel.backends.sam3.backend import Sam3Backend
    from prelabel.config import Settings


def create(settings: Settings, models_dir: Path | None) -> Sam3Backend:
    """Load SAM 3 (``models.sam3``, or ``--models DIR/sam3``) on ``models.device`` in
    ``models.dtype`` (``auto``: bf16 on CUDA) and wrap it, K = ``models.sam3_prompt_batch``."""
    from prelabel.backends.loading import resolve_device
    from prelabel.backends.sam3.backend import Sam3Backend
    from prelabel.backends.sam3.loading import load_sam3, resolve_dtype

    models = settings.models
    (source,) = layout.model_sources(models, SPEC.model_roles, models_dir).values()
    device = resolve_device(models.device)
    dtype = resolve_dtype(models.dtype_for("sam3"), device)
    return Sam3Backend(
        load_sam3(source, device=device, dtype=dtype), prompt_batch=models.sam3_prompt_batch
    )
