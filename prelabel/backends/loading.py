"""Loading helpers every back-end shares: device and dtype choice, the one ``from_pretrained``
path with its checks, and the error that says where weights were looked for.

Every model comes through ``from_pretrained``, whether it is a hub id, a directory saved with
``save_pretrained``, a converted SAM checkpoint (``prelabel models convert-sam``) or a tiny
random-weight model (``prelabel models tiny``): there is one loading path, so the tiny models
used by tests exercise exactly the code a real run uses. A back-end names its models as
:class:`ModelRole` values (class, processor, accepted ``model_type``); this module imports no
model class, so it serves every back-end.

Device and dtype:

- ``device="auto"`` picks CUDA when present, then Apple MPS, then the CPU.
- ``dtype`` is set for all models or per model (``models.dtype.sam``). ``"auto"`` picks float32
  on the CPU and MPS (half precision there is slow and some kernels lack it). On CUDA it picks
  bfloat16 (float16 on cards without bf16) for the roles a back-end lists as safe in half
  precision (``half_on_cuda``), and float32 for the rest (Grounding DINO: its deformable
  attention samples feature maps at positions computed from the boxes, and bf16 turns the tiny
  model's boxes into NaN on the CPU; ``benchmarks/dtype_boxes.py`` compares them on a GPU).

When weights cannot be found (no such directory, not in the Hugging Face cache, hub unreachable or
offline mode on) the caller gets one :class:`~prelabel.errors.ModelLoadError` that names the model,
where it looked and how to provide the weights, instead of the library's traceback.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import torch
from safetensors import SafetensorError
from transformers import AutoConfig
from transformers.utils import logging as hf_logging

from prelabel.backends.layout import layout_hint, local_path, offline_env
from prelabel.config import ModelSettings
from prelabel.errors import ConfigError, ModelLoadError

logger = logging.getLogger(__name__)

#: File that ``prelabel models tiny`` writes into each tiny model directory. Its presence is the
#: only way to tell a tiny random model from a real one, so it must survive copying the folder.
TINY_MARKER = "prelabel-tiny-random-weights.json"

#: Human-readable names, for log lines and error messages, by role (the model's key under
#: ``models:`` in the config).
MODEL_TITLES = {
    "grounding_dino": "Grounding DINO",
    "sam": "SAM",
    "clipseg": "CLIPSeg",
    "sam2_video": "SAM 2 video",
    "sam3": "SAM 3",
}

#: What from_pretrained raises for missing files, offline mode, a bad repo id, broken tokenizer
#: files or an unreadable safetensors file. Only calls into from_pretrained are wrapped with it.
_LOAD_ERRORS = (OSError, ValueError, RuntimeError, SafetensorError)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True, kw_only=True)
class ModelRole:
    """One model a back-end loads: the classes, and what its folder must hold.

    ``model_types`` are the accepted ``model_type`` values: loading a checkpoint of another type
    through an explicit class "works" in transformers (it warns and initialises the missing
    weights at random), so the config is checked first. ``layout`` is the back-end's set of
    ``--models DIR`` subdirectories, for the hint in error messages; ``remedy`` an extra way to
    get the weights (the SAM converter).
    """

    key: str
    model_class: Any
    processor_class: Any | None
    model_types: frozenset[str]
    layout: tuple[str, ...]
    remedy: str | None = None
    #: Pass the checked config to ``from_pretrained``; False where the folder's config is of
    #: another class than the model's (SAM 3's video checkpoint holds the image model's config
    #: under ``detector_config``, which ``Sam3Model`` reads itself).
    pass_config: bool = True

    @property
    def title(self) -> str:
        return MODEL_TITLES[self.key]


def resolve_device(name: str) -> torch.device:
    """Turn a device setting into a torch device, refusing devices this machine lacks.

    ``"auto"`` prefers CUDA, then MPS, then the CPU. An explicit ``"cuda"`` on a machine without
    CUDA is a :class:`ConfigError` rather than a crash at the first tensor move, because the
    usual cause is a CPU-only torch build, which the message names.
    """
    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps ({exc})"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {name!r} requested but CUDA is not available "
                f"(torch {torch.__version__}); use --device cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {name!r} requested but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    elif device.type == "mps" and not _mps_available():
        raise ConfigError(f"device {name!r} requested but MPS is not available on this machine")
    elif device.type not in {"cpu", "cuda", "mps"}:
        raise ConfigError(f"unsupported device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return device


def choose_dtype(
    name: str, device: torch.device, *, role: str, half_on_cuda: bool = False
) -> torch.dtype:
    """Pick one model's weight dtype (``role`` as in :data:`MODEL_TITLES`).

    ``"auto"`` is float32 off CUDA and for models whose back-end does not list them as safe in
    half precision (``half_on_cuda``); on CUDA those get bf16 (fp16 on pre-Ampere cards).
    MPS gets float32 because Grounding DINO's deformable attention and SAM's upsampling are not
    reliable in half precision there. An explicit half dtype on the CPU is honoured but logged,
    since it is slower than float32 on most CPUs.
    """
    if name == "auto":
        if device.type == "cuda" and half_on_cuda:
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        dtype = _DTYPES[name]
    except KeyError:
        raise ConfigError(
            f"unknown dtype {name!r}: use auto, {', '.join(sorted(_DTYPES))}"
        ) from None
    if device.type == "cpu" and dtype != torch.float32:
        logger.warning(
            "%s in %s on the CPU is usually slower than float32", MODEL_TITLES[role], name
        )
    return dtype


def is_tiny_model_dir(path: str | Path) -> bool:
    """True when ``path`` is a directory written by ``prelabel models tiny``."""
    return (Path(path).expanduser() / TINY_MARKER).is_file()


@contextlib.contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """Hide transformers' per-call tqdm bars ("Loading weights", "Writing model shards").

    They are noise on a CLI that loads three models, and they break log output. The previous
    setting is restored, so a notebook that enabled the bars keeps them afterwards.
    """
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def offline_mode() -> bool:
    """True when hub access is switched off.

    huggingface_hub reads ``HF_HUB_OFFLINE`` once at import; checking the environment again here
    means a variable set later (a notebook cell, a test's monkeypatch) still avoids the network
    retries, which take about 20 s per file on a machine without a route to the hub.
    """
    return bool(huggingface_hub.constants.HF_HUB_OFFLINE) or offline_env()


def load_pretrained(
    role: ModelRole, source: str, device: torch.device, dtype: torch.dtype
) -> tuple[Any, Any]:
    """Load one model (and its processor, if the role has one) in eval mode on ``device``.

    Raises :class:`ModelLoadError` naming the model, where it looked and how to provide the
    weights, when they are missing, of another model type, incomplete or do not fit in memory.
    """
    model_cls, processor_cls = role.model_class, role.processor_class
    title = role.title
    local = local_path(source)
    if local is not None and not local.is_dir():
        cause = "not a directory" if local.exists() else "no such directory"
        raise ModelLoadError(_missing_message(role, source, local=local, cause=cause))
    where = str(local) if local is not None else source
    kwargs: dict[str, Any] = {"local_files_only": local is not None or offline_mode()}
    logger.info("loading %s from %s", title, where)
    with quiet_progress_bars():
        try:
            config = AutoConfig.from_pretrained(where, **kwargs)
        except _LOAD_ERRORS as exc:
            raise ModelLoadError(
                _missing_message(role, source, local=local, cause=_first_line(exc))
            ) from exc
        if config.model_type not in role.model_types:
            expected = " or ".join(sorted(role.model_types))
            raise ModelLoadError(
                f"{where} holds a {config.model_type!r} model, not {title} "
                f"(expected model_type {expected}).\n{layout_hint(role.layout)}"
            )
        model_kwargs = {**kwargs, "config": config} if role.pass_config else kwargs
        try:
            model, info = model_cls.from_pretrained(
                where, dtype=dtype, output_loading_info=True, **model_kwargs
            )
            processor = processor_cls and processor_cls.from_pretrained(where, **kwargs)
        except _LOAD_ERRORS as exc:
            raise ModelLoadError(
                _missing_message(role, source, local=local, cause=_first_line(exc))
            ) from exc
    if info["missing_keys"] or info["mismatched_keys"]:
        bad = sorted(info["missing_keys"]) + sorted(str(k) for k in info["mismatched_keys"])
        raise ModelLoadError(
            f"{title} weights in {where} are incomplete: {len(bad)} tensor(s) missing or of the "
            f"wrong shape (first: {bad[0]}). Re-download or re-convert them."
        )
    try:
        model = model.to(device).eval()
    except torch.cuda.OutOfMemoryError:
        raise ModelLoadError(
            f"not enough memory on {device} for {title} in {str(dtype).removeprefix('torch.')}: "
            "free the device, use a smaller model, or pass --device cpu"
        ) from None
    logger.info("%s ready on %s (%s)", title, device, str(dtype).removeprefix("torch."))
    return model, processor


def _missing_message(role: ModelRole, source: str, *, local: Path | None, cause: str) -> str:
    title = role.title
    hub_id = getattr(ModelSettings(), role.key) if local is not None else source
    if local is not None:
        where = f"Looked in the local directory {local.resolve()}."
    else:
        if offline_mode():
            if "huggingface.co" in cause:
                # transformers' text talks about connecting, which offline mode never tries.
                cause = "not in the Hugging Face cache"
            hub = "huggingface.co was not asked (offline mode: HF_HUB_OFFLINE is set)"
        else:
            hub = "huggingface.co could not be reached, has no such model, or refused access"
        where = (
            f"{source!r} is not a local directory, so it was read as a Hugging Face id. Looked "
            f"in the Hugging Face cache at {huggingface_hub.constants.HF_HUB_CACHE}; {hub}."
        )
    remedies = [
        f"pass --models DIR, a directory with {_subdir_list(role.layout)} subdirectories, each "
        "saved with "
        "save_pretrained (the layout `prelabel models tiny DIR` writes)",
        f"set models.{role.key} in the config file to a local directory saved with save_pretrained",
        f"on a machine with internet run `hf download {hub_id}`, copy the Hugging Face cache "
        "to this machine (point HF_HOME or HF_HUB_CACHE at it) and set HF_HUB_OFFLINE=1",
    ]
    if role.remedy:
        remedies.append(role.remedy)
    return "\n".join(
        [
            f"cannot load {title} from {source!r}: {cause}",
            where,
            "To provide the weights, either:",
            ";\n".join(f"  - {r}" for r in remedies) + ".",
        ]
    )


def _subdir_list(layout: Sequence[str]) -> str:
    return ", ".join(f"{sub}/" for sub in layout)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
