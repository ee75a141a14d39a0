"""Load the SAM 2 video model, apart from the image models and only when a sequence needs it.

Why apart: an image run must not load (or need weights for) a tracker it never uses, and
``--models DIR`` keeps working for image runs without ``DIR/sam2_video``. The model comes
through the same ``from_pretrained`` path, errors and tiny-model warning as the image models
(:mod:`prelabel.backends.loading`); it has no processor (:mod:`.frames` replaces it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Sam2VideoModel

from prelabel.backends.loading import (
    ModelRole,
    choose_dtype,
    is_tiny_model_dir,
    load_pretrained,
    resolve_device,
)
from prelabel.config import ModelSettings
from prelabel.errors import ModelLoadError

__all__ = ["SAM2_VIDEO_SUBDIR", "LoadedTracker", "load_sam2_video"]

logger = logging.getLogger(__name__)

#: Subdirectory of ``--models DIR`` that holds the SAM 2 video model.
SAM2_VIDEO_SUBDIR = "sam2_video"

_ROLE = ModelRole(
    key="sam2_video",
    model_class=Sam2VideoModel,
    processor_class=None,  # its processors need torchvision: see .frames
    model_types=frozenset({"sam2_video"}),
    layout=(SAM2_VIDEO_SUBDIR,),
)


@dataclass(frozen=True, kw_only=True)
class LoadedTracker:
    """The SAM 2 video model in eval mode, where it runs, and whether it is a tiny random one."""

    model: Sam2VideoModel
    device: torch.device
    dtype: torch.dtype
    is_tiny: bool


def sam2_video_source(settings: ModelSettings, models_dir: Path | None) -> str:
    """``models_dir/sam2_video`` when ``models_dir`` is given (it must exist), else the setting."""
    if models_dir is None:
        return settings.sam2_video
    path = models_dir.expanduser() / SAM2_VIDEO_SUBDIR
    if not path.is_dir():
        raise ModelLoadError(
            f"--models {models_dir} lacks the subdirectory {SAM2_VIDEO_SUBDIR}/, which image "
            "sequences need for SAM 2 video tracking. Write one with `prelabel models tiny DIR` "
            "(tests) or save a Sam2VideoModel there with save_pretrained."
        )
    return str(path)


def load_sam2_video(settings: ModelSettings, models_dir: Path | None = None) -> LoadedTracker:
    """Load the SAM 2 video model (``models.sam2_video`` or ``models_dir/sam2_video``).

    ``dtype: auto`` is float32 on every device (SAM 2's memory is already stored in bf16 by
    transformers; half precision of the rest is untested here). Raises
    :class:`ModelLoadError` when the weights are missing or unusable.
    """
    device = resolve_device(settings.device)
    dtype = choose_dtype(settings.dtype_for("sam2_video"), device, role="sam2_video")
    source = sam2_video_source(settings, models_dir)
    model, _ = load_pretrained(_ROLE, source, device, dtype)
    tiny = is_tiny_model_dir(source)
    if tiny:
        logger.warning("tiny random-weight models in use: masks are meaningless (sam2_video)")
    assert isinstance(model, Sam2VideoModel)
    return LoadedTracker(model=model, device=device, dtype=dtype, is_tiny=tiny)
