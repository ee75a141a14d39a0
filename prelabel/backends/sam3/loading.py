"""Load SAM 3 (``Sam3Model`` and its CLIP tokenizer) from a Hugging Face id or a folder.

One path for every source: the gated hub checkpoint (``facebook/sam3``), a folder saved from
it, and the tiny random model of :mod:`.tiny` all go through ``from_pretrained``. The image
side (1008 for the released model) and the mask side (288) are read from the model's config,
never assumed. The caller resolves ``auto`` device and dtype; SAM 3 in bf16 on CUDA is what
``dtype: auto`` is expected to pick, and :func:`require_finite` turns a NaN or infinity in its
outputs into :class:`~prelabel.errors.NonFiniteOutputError` instead of empty masks.

The released checkpoint is saved as the video model (``model_type: sam3_video``, the image
detector under ``detector_config``); ``Sam3Model`` reads its detector part and ignores the
tracker weights, so both ``sam3`` and ``sam3_video`` folders are accepted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase, Sam3Model
from transformers.utils import logging as hf_logging

from prelabel.errors import ModelLoadError, NonFiniteOutputError

__all__ = [
    "DEFAULT_SAM3",
    "IMAGE_MEAN",
    "IMAGE_STD",
    "SAM3_TITLE",
    "TINY_MARKER",
    "Sam3Models",
    "load_sam3",
    "require_finite",
]

logger = logging.getLogger(__name__)

#: The released checkpoint (gated: request access on its page; the SAM License applies).
DEFAULT_SAM3 = "facebook/sam3"
SAM3_TITLE = "SAM 3"
#: Same file name as the other tiny models' marker (prelabel.pipeline.loading.TINY_MARKER).
TINY_MARKER = "prelabel-tiny-random-weights.json"
#: SAM 3's normalisation (its image processor's mean and std, per channel).
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)

_MODEL_TYPES = frozenset({"sam3", "sam3_video"})
_LOAD_ERRORS = (OSError, ValueError, RuntimeError, SafetensorError)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_TRUE = {"1", "ON", "YES", "TRUE"}


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


def load_sam3(source: str | Path, *, device: torch.device, dtype: torch.dtype) -> Sam3Models:
    """Load SAM 3 from a Hugging Face id or a local folder (model and tokenizer together).

    Raises :class:`ModelLoadError` naming the model, where it looked and how to provide the
    weights when they are missing, gated, incomplete or of another model type.
    """
    text = str(source)
    local = _local_path(text)
    if local is not None and not local.is_dir():
        cause = "not a directory" if local.exists() else "no such directory"
        raise ModelLoadError(_missing_message(text, local, cause))
    where = str(local) if local is not None else text
    kwargs: dict[str, Any] = {"local_files_only": local is not None or _offline()}
    logger.info("loading %s from %s", SAM3_TITLE, where)
    with quiet_progress_bars():
        try:
            config = AutoConfig.from_pretrained(where, **kwargs)
        except _LOAD_ERRORS as exc:
            raise ModelLoadError(_missing_message(text, local, _first_line(exc))) from exc
        if config.model_type not in _MODEL_TYPES:
            raise ModelLoadError(
                f"{where} holds a {config.model_type!r} model, not {SAM3_TITLE} "
                f"(expected model_type sam3 or sam3_video)"
            )
        try:
            model, info = Sam3Model.from_pretrained(
                where, dtype=dtype, output_loading_info=True, **kwargs
            )
            tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
        except _LOAD_ERRORS as exc:
            raise ModelLoadError(_missing_message(text, local, _first_line(exc))) from exc
    bad = sorted(info["missing_keys"]) + sorted(str(k) for k in info["mismatched_keys"])
    if bad:
        raise ModelLoadError(
            f"{SAM3_TITLE} weights in {where} are incomplete: {len(bad)} tensor(s) missing or of "
            f"the wrong shape (first: {bad[0]}). Download them again."
        )
    try:
        model = model.to(device).eval()
    except torch.cuda.OutOfMemoryError:
        raise ModelLoadError(
            f"not enough memory on {device} for {SAM3_TITLE} in {_name(dtype)}: free the "
            "device or pass --device cpu"
        ) from None
    is_tiny = local is not None and (local / TINY_MARKER).is_file()
    if is_tiny:
        logger.warning("tiny random-weight %s in use: masks are meaningless", SAM3_TITLE)
    vision = model.config.vision_config
    backbone = vision.backbone_config
    grid = int(backbone.image_size) // int(backbone.patch_size)
    mask_side = round(grid * float(vision.scale_factors[0]))
    logger.info("%s ready on %s (%s)", SAM3_TITLE, device, _name(dtype))
    return Sam3Models(
        model=model,
        tokenizer=tokenizer,
        image_size=int(backbone.image_size),
        mask_size=(mask_side, mask_side),
        text_length=int(model.config.text_config.max_position_embeddings),
        device=device,
        dtype=dtype,
        is_tiny=is_tiny,
        source=where,
    )


def require_finite(model: torch.nn.Module, **outputs: torch.Tensor) -> None:
    """Raise :class:`NonFiniteOutputError` when an output holds NaN or infinity.

    NaN never crashes anything downstream (``NaN > 0.5`` is False), so a model overflowing in
    half precision would silently give empty labels; the message names the model, the output,
    its dtype and what to change.
    """
    for name, tensor in outputs.items():
        if bool(torch.isfinite(tensor).all()):
            continue
        dtype = _name(next(model.parameters()).dtype)
        bad = int((~torch.isfinite(tensor)).sum())
        advice = (
            "run SAM 3 in float32 (models.dtype in the config)"
            if dtype != "float32"
            else "the weights may be damaged; download them again"
        )
        raise NonFiniteOutputError(
            f"{SAM3_TITLE} ({dtype}) returned {bad} non-finite value(s) in its {name} of "
            f"{tuple(tensor.shape)}; refusing to turn them into empty masks: {advice}"
        )


@contextlib.contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """Hide transformers' per-call progress bars, restoring the previous setting after."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _offline() -> bool:
    """Hub access switched off (read again here: the variable may be set after import)."""
    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(huggingface_hub.constants.HF_HUB_OFFLINE) or env.strip().upper() in _TRUE


def _local_path(source: str) -> Path | None:
    """A local path for ``source``, or None when it can only be a hub id (as for the other
    models: what exists on disk, or cannot be a hub id, is a path)."""
    path = Path(source).expanduser()
    if path.exists() or not _HUB_ID.match(source):
        return path
    return None


def _missing_message(source: str, local: Path | None, cause: str) -> str:
    hub_id = DEFAULT_SAM3 if local is not None else source
    if local is not None:
        where = f"Looked in the local directory {local.resolve()}."
    else:
        hub = (
            "huggingface.co was not asked (offline mode: HF_HUB_OFFLINE is set)"
            if _offline()
            else "huggingface.co could not be reached, has no such model, or refused access"
        )
        where = (
            f"{source!r} is not a local directory, so it was read as a Hugging Face id. Looked "
            f"in the Hugging Face cache at {huggingface_hub.constants.HF_HUB_CACHE}; {hub}."
        )
    remedies = [
        f"{DEFAULT_SAM3} is gated: request access on https://huggingface.co/{DEFAULT_SAM3} "
        "(the SAM License applies), then log in with `hf auth login` or set HF_TOKEN",
        "pass --models DIR with a sam3/ subdirectory saved with save_pretrained "
        "(the layout `prelabel models tiny DIR` writes)",
        f"on a machine with access run `hf download {hub_id}`, copy the Hugging Face cache to "
        "this machine (point HF_HOME or HF_HUB_CACHE at it) and set HF_HUB_OFFLINE=1",
    ]
    return "\n".join(
        [
            f"cannot load {SAM3_TITLE} from {source!r}: {cause}",
            where,
            "To provide the weights, either:",
            ";\n".join(f"  - {r}" for r in remedies) + ".",
        ]
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
