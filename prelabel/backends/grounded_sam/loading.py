"""Load the ``grounded_sam`` back-end's three models: a Grounding DINO-style detector, SAM and
CLIPSeg, with their processors, through the shared path of :mod:`prelabel.backends.loading`.

The detector is any checkpoint transformers loads with ``AutoModelForZeroShotObjectDetection``
whose outputs the Grounding DINO processor post-processes: Grounding DINO itself, MM Grounding
DINO and LLMDet (``model_type`` ``grounding-dino`` or ``mm-grounding-dino``), so
``models.grounding_dino`` may name any of them. ``dtype: auto`` keeps the detector in float32
on CUDA (its deformable attention samples at box-derived positions) and runs SAM and CLIPSeg,
whose outputs are thresholded maps, in half precision there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import torch
from transformers import (
    AutoModelForZeroShotObjectDetection,
    CLIPSegForImageSegmentation,
    CLIPSegProcessor,
    GroundingDinoForObjectDetection,
    GroundingDinoProcessor,
    MMGroundingDinoForObjectDetection,
    SamModel,
    SamProcessor,
)

from prelabel.backends import layout
from prelabel.backends.loading import (
    ModelRole,
    choose_dtype,
    is_tiny_model_dir,
    load_pretrained,
    resolve_device,
)
from prelabel.config import ModelSettings

logger = logging.getLogger(__name__)

#: Subdirectory of ``--models DIR`` that holds each model (model and processor files together).
MODEL_SUBDIRS = {"grounding_dino": "grounding_dino", "sam": "sam", "clipseg": "clipseg"}

_LAYOUT = tuple(MODEL_SUBDIRS.values())

#: The models, by role (their keys under ``models:`` in the config).
ROLES: dict[str, ModelRole] = {
    "grounding_dino": ModelRole(
        key="grounding_dino",
        model_class=AutoModelForZeroShotObjectDetection,
        processor_class=GroundingDinoProcessor,
        model_types=frozenset({"grounding-dino", "mm-grounding-dino"}),
        layout=_LAYOUT,
    ),
    "sam": ModelRole(
        key="sam",
        model_class=SamModel,
        processor_class=SamProcessor,
        model_types=frozenset({"sam"}),
        layout=_LAYOUT,
        remedy="for an original segment-anything checkpoint (sam_vit_h_4b8939.pth and the like) "
        "run `prelabel models convert-sam CHECKPOINT.pth DIR/sam`",
    ),
    "clipseg": ModelRole(
        key="clipseg",
        model_class=CLIPSegForImageSegmentation,
        processor_class=CLIPSegProcessor,
        model_types=frozenset({"clipseg"}),
        layout=_LAYOUT,
    ),
}

#: Models that ``dtype: auto`` runs in half precision on CUDA (see the module docstring).
_HALF_ON_CUDA = frozenset({"sam", "clipseg"})

#: A detector this back-end can post-process with the Grounding DINO processor.
Detector: TypeAlias = GroundingDinoForObjectDetection | MMGroundingDinoForObjectDetection


@dataclass(frozen=True, kw_only=True)
class LoadedModels:
    """The three models and their processors, in eval mode on one device.

    The processors return float32 tensors on the CPU: move them with ``.to(device)`` and cast
    floating inputs (``pixel_values``) to the model's entry in :attr:`dtypes` before calling it.
    """

    grounding_dino: Detector
    grounding_dino_processor: GroundingDinoProcessor
    sam: SamModel
    sam_processor: SamProcessor
    clipseg: CLIPSegForImageSegmentation
    clipseg_processor: CLIPSegProcessor
    device: torch.device
    #: The dtype each model's weights were cast to, by role (``grounding_dino``, ``sam``,
    #: ``clipseg``).
    dtypes: dict[str, torch.dtype]
    #: True when any of the three is a tiny random-weight model: its masks are meaningless.
    is_tiny: bool


def model_sources(settings: ModelSettings, models_dir: Path | None) -> dict[str, str]:
    """Where each of the three models loads from (:func:`.layout.model_sources`)."""
    return layout.model_sources(settings, _LAYOUT, models_dir)


def load_models(settings: ModelSettings, models_dir: Path | None = None) -> LoadedModels:
    """Load the detector, SAM and CLIPSeg with their processors, ready for inference.

    Models load one after the other and the first failure stops the run, so a machine without
    weights fails after one lookup rather than three. Raises :class:`ModelLoadError` when weights
    are missing or unusable and :class:`~prelabel.errors.ConfigError` for an unusable device or
    dtype.
    """
    device = resolve_device(settings.device)
    dtypes = {
        role: resolve_dtype(settings.dtype_for(role), device, role=role) for role in MODEL_SUBDIRS
    }
    sources = model_sources(settings, models_dir)
    loaded: dict[str, Any] = {}
    tiny_roles = []
    for role, source in sources.items():
        model, processor = load_pretrained(ROLES[role], source, device, dtypes[role])
        loaded[role] = model
        loaded[f"{role}_processor"] = processor
        if is_tiny_model_dir(source):
            tiny_roles.append(role)
    if tiny_roles:
        logger.warning(
            "tiny random-weight models in use: masks are meaningless (%s)", ", ".join(tiny_roles)
        )
    if settings.compile:
        compile_encoders(loaded["sam"], loaded["clipseg"])
    return LoadedModels(**loaded, device=device, dtypes=dtypes, is_tiny=bool(tiny_roles))


def resolve_dtype(name: str, device: torch.device, *, role: str) -> torch.dtype:
    """One model's weight dtype: ``auto`` is bf16 on CUDA for SAM and CLIPSeg, float32 for the
    detector and everywhere else (see :func:`prelabel.backends.loading.choose_dtype`)."""
    return choose_dtype(name, device, role=role, half_on_cuda=role in _HALF_ON_CUDA)


def compile_encoders(sam: Any, clipseg: Any) -> None:
    """``torch.compile`` the image encoders, whose input shape never changes (SAM's 1024 square,
    CLIPSeg's 352 square), so they compile once. Grounding DINO sees varying image sizes and
    would recompile, so it is left alone. Attention already uses PyTorch SDPA in SAM and
    CLIPSeg (transformers' default where a model supports it)."""
    sam.vision_encoder = torch.compile(sam.vision_encoder)
    clipseg.clip.vision_model = torch.compile(clipseg.clip.vision_model)
