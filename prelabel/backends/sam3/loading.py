"""Load SAM 3 (``Sam3Model`` and its CLIP tokenizer) from a Hugging Face id or a folder.

One path for every source, the shared :func:`~prelabel.backends.loading.load_pretrained`:
the gated hub checkpoint (``facebook/sam3``), a folder saved from it, and the tiny random model
of :mod:`.tiny` all go through ``from_pretrained``, with the same error wording as every other
model. The image side (1008 for the released model) and the mask side (288) are read from the
model's config, never assumed. The caller resolves ``auto`` device and dtype (bf16 on CUDA,
:func:`resolve_dtype`); :func:`~prelabel.backends.finite.require_finite` turns a NaN or
infinity in its outputs into :class:`~prelabel.errors.NonFiniteOutputError` instead of empty
masks.

The released checkpoint is saved as the video model (``model_type: sam3_video``, the image
detector under ``detector_config``); ``Sam3Model`` reads its detector part and ignores the
tracker weights, so both ``sam3`` and ``sam3_video`` folders are accepted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, Sam3Model

from prelabel.backends.loading import ModelRole, choose_dtype, is_tiny_model_dir, load_pretrained

__all__ = [
    "DEFAULT_SAM3",
    "IMAGE_MEAN",
    "IMAGE_STD",
    "ROLE",
    "SAM3_SUBDIR",
    "Sam3Models",
    "load_sam3",
    "resolve_dtype",
]

logger = logging.getLogger(__name__)

#: The released checkpoint (gated: request access on its page; the SAM License applies).
DEFAULT_SAM3 = "facebook/sam3"
#: Its subdirectory of ``--models DIR`` and its key under ``models:`` in the config.
SAM3_SUBDIR = "sam3"
#: SAM 3's normalisation (its image processor's mean and std, per channel).
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)

#: SAM 3 as the shared loader sees it: the tokenizer stands in for the processor (the image
#: side is written in :mod:`.processing`, as transformers' needs torchvision).
ROLE = ModelRole(
    key=SAM3_SUBDIR,
    model_class=Sam3Model,
    processor_class=AutoTokenizer,
    model_types=frozenset({"sam3", "sam3_video"}),
    layout=(SAM3_SUBDIR,),
    remedy=f"{DEFAULT_SAM3} is gated: accept the SAM License on "
    f"https://huggingface.co/{DEFAULT_SAM3}, then log in with `hf auth login` (or set HF_TOKEN)",
    pass_config=False,
)


@dataclass(frozen=True, kw_only=True)
class Sam3Models:
    """SAM 3 ready for inference: the model in eval mode on ``device`` in ``dtype``."""

    model: Sam3Model
    tokenizer: PreTrainedTokenizerBase
    #: Side of the square the model sees (1008 for the released model).
    image_size: int
    #: ``(height, width)`` of the masks and semantic maps the model returns (288 x 288).
    mask_size: tuple[int, int]
    #: Tokens per phrase, padding included (the text encoder's positions: 32).
    text_length: int
    device: torch.device
    dtype: torch.dtype
    #: True for the tiny random model of :mod:`.tiny`: its masks are meaningless.
    is_tiny: bool
    #: Where it was loaded from, for messages.
    source: str


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """SAM 3's weight dtype: ``auto`` is bf16 on CUDA (fp16 on cards without bf16), float32
    elsewhere (:func:`~prelabel.backends.loading.choose_dtype`). Its outputs are scores and
    thresholded maps, like SAM's, and its boxes come from the decoder, not from sampling
    positions, so half precision is safe where it is fast."""
    return choose_dtype(name, device, role=SAM3_SUBDIR, half_on_cuda=True)


def load_sam3(source: str | Path, *, device: torch.device, dtype: torch.dtype) -> Sam3Models:
    """Load SAM 3 from a Hugging Face id or a local folder (model and tokenizer together).

    Raises :class:`~prelabel.errors.ModelLoadError` naming the model, where it looked and how
    to provide the weights (the gated checkpoint's access steps included) when they are
    missing, gated, incomplete or of another model type.
    """
    text = str(source)
    model, tokenizer = load_pretrained(ROLE, text, device, dtype)
    is_tiny = is_tiny_model_dir(text)
    if is_tiny:
        logger.warning("tiny random-weight models in use: masks are meaningless (sam3)")
    vision = model.config.vision_config
    backbone = vision.backbone_config
    grid = int(backbone.image_size) // int(backbone.patch_size)
    mask_side = round(grid * float(vision.scale_factors[0]))
    return Sam3Models(
        model=model,
        tokenizer=tokenizer,
        image_size=int(backbone.image_size),
        mask_size=(mask_side, mask_side),
        text_length=int(model.config.text_config.max_position_embeddings),
        device=device,
        dtype=dtype,
        is_tiny=is_tiny,
        source=text,
    )
