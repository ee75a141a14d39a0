"""Convert an original segment-anything checkpoint (``sam_vit_h_4b8939.pth`` ...) for transformers.

Meta's SAM checkpoints are plain PyTorch state dicts in the layout of the ``segment_anything``
package. transformers' own converter (``convert_sam_to_hf.py``) is not shipped in the wheel and
downloads from the hub even when given a file, so prelabel carries this small offline one:

1. read the state dict with ``weights_only=True`` (no pickled code runs);
2. infer the architecture from tensor shapes (hidden size, depth, heads from the relative position
   tables, which blocks attend globally, decoder sizes) and name the variant when it is one of
   Meta's three (vit_b, vit_l, vit_h); other shapes (SlimSAM-style pruned models, the test suite's
   small models) convert as ``"custom"``;
3. rename the keys to transformers' :class:`~transformers.SamModel` layout and load them strictly:
   a key that is missing, unexpected or of the wrong shape is an error, never a random weight;
4. save the model (safetensors) and a :class:`~transformers.SamProcessor` with SAM's real
   preprocessing: longest side 1024, padded to 1024x1024, normalised with SAM's pixel mean and
   std (ImageNet statistics scaled to 0-255, i.e. exactly ImageNet mean/std on 0-1 pixels).

The output directory loads with ``SamModel.from_pretrained`` and works as the ``sam`` subdirectory
of ``--models DIR``.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import SamConfig, SamImageProcessorPil, SamModel, SamProcessor

from prelabel.backends.loading import quiet_progress_bars
from prelabel.errors import ModelLoadError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamVariant:
    """One of Meta's released image encoders, as ``segment_anything/build_sam.py`` defines it."""

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]


SAM_VARIANTS = (
    SamVariant("vit_b", 768, 12, 12, (2, 5, 8, 11)),
    SamVariant("vit_l", 1024, 24, 16, (5, 11, 17, 23)),
    SamVariant("vit_h", 1280, 32, 16, (7, 15, 23, 31)),
)

#: SAM's two-way transformer uses 8 heads in every released model; head count leaves no trace in
#: the decoder's weight shapes, so it cannot be inferred and is taken as given.
SAM_DECODER_HEADS = 8

#: Keys every SAM (v1) checkpoint has; their absence means the file is something else.
_REQUIRED_KEYS = (
    "image_encoder.patch_embed.proj.weight",
    "image_encoder.neck.0.weight",
    "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
    "mask_decoder.iou_token.weight",
    "mask_decoder.mask_tokens.weight",
)

#: segment-anything registers these with persistent=False, so released checkpoints lack them, but
#: state dicts saved from other code paths may carry them. The processor does the normalisation.
_DROPPED_KEYS = ("pixel_mean", "pixel_std")

#: Exact renames, applied in order to each key (anchored regular expressions).
_RENAMES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^image_encoder\.", "vision_encoder."),
        (r"^vision_encoder\.blocks\.(\d+)\.norm(\d)\.", r"vision_encoder.layers.\1.layer_norm\2."),
        (r"^vision_encoder\.blocks\.", "vision_encoder.layers."),
        (r"^vision_encoder\.patch_embed\.proj\.", "vision_encoder.patch_embed.projection."),
        (r"^vision_encoder\.neck\.0\.", "vision_encoder.neck.conv1."),
        (r"^vision_encoder\.neck\.1\.", "vision_encoder.neck.layer_norm1."),
        (r"^vision_encoder\.neck\.2\.", "vision_encoder.neck.conv2."),
        (r"^vision_encoder\.neck\.3\.", "vision_encoder.neck.layer_norm2."),
        (
            r"^prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix$",
            "prompt_encoder.shared_embedding.positional_embedding",
        ),
        (r"^prompt_encoder\.point_embeddings\.", "prompt_encoder.point_embed."),
        (r"^prompt_encoder\.mask_downscaling\.0\.", "prompt_encoder.mask_embed.conv1."),
        (r"^prompt_encoder\.mask_downscaling\.1\.", "prompt_encoder.mask_embed.layer_norm1."),
        (r"^prompt_encoder\.mask_downscaling\.3\.", "prompt_encoder.mask_embed.conv2."),
        (r"^prompt_encoder\.mask_downscaling\.4\.", "prompt_encoder.mask_embed.layer_norm2."),
        (r"^prompt_encoder\.mask_downscaling\.6\.", "prompt_encoder.mask_embed.conv3."),
        (r"^mask_decoder\.output_upscaling\.0\.", "mask_decoder.upscale_conv1."),
        (r"^mask_decoder\.output_upscaling\.1\.", "mask_decoder.upscale_layer_norm."),
        (r"^mask_decoder\.output_upscaling\.3\.", "mask_decoder.upscale_conv2."),
        (
            r"^mask_decoder\.transformer\.layers\.(\d+)\.norm(\d)\.",
            r"mask_decoder.transformer.layers.\1.layer_norm\2.",
        ),
        (
            r"^mask_decoder\.transformer\.norm_final_attn\.",
            "mask_decoder.transformer.layer_norm_final_attn.",
        ),
    )
)

#: segment-anything's MLP keeps all linear layers in ``layers.N``; transformers' SamFeedForward
#: names the first ``proj_in``, the last ``proj_out`` and the ones between ``layers.0..``.
_MLP_KEY = re.compile(
    r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.(\d+)\.(.+)$"
)


def convert_sam_checkpoint(checkpoint: Path, out_dir: Path) -> str:
    """Convert an original SAM ``.pth`` into a transformers SAM directory; return the variant.

    The variant is ``"vit_b"``, ``"vit_l"`` or ``"vit_h"``, or ``"custom"`` for other shapes.
    Raises :class:`ModelLoadError` naming the file when it is unreadable or not a SAM (v1)
    checkpoint, and when any weight fails to find its place.
    """
    checkpoint = Path(checkpoint).expanduser()
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise ModelLoadError(f"output {out_dir} exists and is not a directory")
    state_dict = load_original_state_dict(checkpoint)
    config, variant = infer_sam_config(state_dict, source=checkpoint)
    renamed = rename_original_keys(state_dict)

    # Build on the meta device and adopt the checkpoint's tensors: no time is spent on random
    # initialisation (ViT-H has 641M parameters) and no memory on a second copy.
    with torch.device("meta"):
        model = SamModel(config)
    expected = set(model.state_dict())
    missing = sorted(expected - renamed.keys())
    unexpected = sorted(renamed.keys() - expected)
    if missing or unexpected:
        raise ModelLoadError(
            f"{checkpoint} does not fit the SAM architecture inferred from it ({variant}): "
            f"{_describe_keys('missing', missing)}{_describe_keys('unexpected', unexpected)}"
        )
    try:
        model.load_state_dict(renamed, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelLoadError(
            f"{checkpoint}: weights do not fit the SAM architecture inferred from it ({variant}): "
            f"{str(exc).splitlines()[-1].strip()}"
        ) from None
    still_meta = [name for name, p in model.named_parameters() if p.is_meta]
    if still_meta:  # a tensor the state dict did not cover would otherwise be saved empty
        raise ModelLoadError(f"{checkpoint}: no weights for {', '.join(still_meta[:3])}")
    model.eval()

    image_size = config.vision_config.image_size
    processor = SamProcessor(
        image_processor=SamImageProcessorPil(
            size={"longest_edge": image_size},
            pad_size={"height": image_size, "width": image_size},
            mask_size={"longest_edge": image_size // 4},
            mask_pad_size={"height": image_size // 4, "width": image_size // 4},
        )
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    with quiet_progress_bars():
        model.save_pretrained(out_dir)
        processor.save_pretrained(out_dir)
    logger.info("converted %s (%s) to %s", checkpoint, variant, out_dir)
    return variant


def load_original_state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Read a segment-anything state dict, refusing anything that is not one.

    ``weights_only=True`` means a file that needs arbitrary pickled classes is rejected instead of
    executed. A ``{"model": state_dict}`` wrapper and DataParallel's ``module.`` prefix, both common
    in fine-tuned SAM checkpoints, are unwrapped.
    """
    if not checkpoint.is_file():
        raise ModelLoadError(f"{checkpoint}: no such file")
    try:
        loaded = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise ModelLoadError(
            f"{checkpoint} is not a readable PyTorch checkpoint ({_load_failure(exc)}); expected "
            "an original segment-anything file such as sam_vit_h_4b8939.pth"
        ) from None
    if isinstance(loaded, Mapping):
        for wrapper in ("model", "state_dict"):
            inner = loaded.get(wrapper)
            if isinstance(inner, Mapping) and wrapper not in _REQUIRED_KEYS:
                loaded = inner
                break
    if not isinstance(loaded, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise ModelLoadError(
            f"{checkpoint} is not a SAM checkpoint: expected a state dict of named tensors, "
            f"got {type(loaded).__name__}"
        )
    state_dict = {k.removeprefix("module."): v for k, v in loaded.items()}
    absent = [k for k in _REQUIRED_KEYS if k not in state_dict]
    if absent:
        hint = ""
        if any(k.startswith("image_encoder.trunk.") for k in state_dict):
            hint = " It looks like a SAM 2 checkpoint; only SAM (v1) checkpoints convert."
        raise ModelLoadError(
            f"{checkpoint} is not an original SAM checkpoint: it lacks {', '.join(absent[:3])} "
            f"({len(state_dict)} tensors in the file).{hint}"
        )
    return state_dict


def infer_sam_config(
    state_dict: Mapping[str, torch.Tensor], source: Path | str = "checkpoint"
) -> tuple[SamConfig, str]:
    """Derive a :class:`SamConfig` from tensor shapes in the original layout; name the variant.

    Only shapes are read, so this also works on meta tensors. The number of encoder heads comes
    from the relative position tables (their width is the head dimension) and the global-attention
    blocks are those whose table spans the whole feature map rather than one window.
    """
    try:
        return _infer_sam_config(state_dict, source)
    except KeyError as exc:
        raise ModelLoadError(
            f"{source} is not a complete SAM checkpoint: it lacks {exc.args[0]}"
        ) from None


def _infer_sam_config(
    state_dict: Mapping[str, torch.Tensor], source: Path | str
) -> tuple[SamConfig, str]:
    patch_w = state_dict["image_encoder.patch_embed.proj.weight"]
    hidden, channels, patch, _ = patch_w.shape
    block_ids = _indices(state_dict, r"^image_encoder\.blocks\.(\d+)\.")
    num_layers = len(block_ids)
    if block_ids != list(range(num_layers)) or num_layers == 0:
        raise ModelLoadError(f"{source}: image encoder blocks are not numbered 0..N-1")
    pos = state_dict.get("image_encoder.pos_embed")
    grid = pos.shape[1] if pos is not None else 1024 // patch
    image_size = grid * patch

    found = [state_dict.get(f"image_encoder.blocks.{i}.attn.rel_pos_h") for i in range(num_layers)]
    rel_h = [t for t in found if t is not None]
    use_rel_pos = len(rel_h) == num_layers
    by_dims = {(v.hidden_size, v.num_layers): v for v in SAM_VARIANTS}.get((hidden, num_layers))
    if use_rel_pos:
        head_dim = rel_h[0].shape[1]
        num_heads = hidden // head_dim
        spans = [(t.shape[0] + 1) // 2 for t in rel_h]
        global_attn = tuple(i for i, span in enumerate(spans) if span == grid)
        windows = {span for span in spans if span != grid}
        window_size = windows.pop() if len(windows) == 1 else 14 if not windows else None
        if window_size is None:
            raise ModelLoadError(f"{source}: image encoder blocks use different window sizes")
    elif by_dims is not None:
        num_heads, global_attn, window_size = by_dims.num_heads, by_dims.global_attn_indexes, 14
    else:
        raise ModelLoadError(
            f"{source}: no relative position tables and no known variant with hidden size "
            f"{hidden} and {num_layers} blocks, so the number of heads is unknown"
        )

    pe = state_dict["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
    prompt_hidden = state_dict["prompt_encoder.no_mask_embed.weight"].shape[1]
    decoder_hidden = state_dict["mask_decoder.iou_token.weight"].shape[1]
    internal = state_dict[
        "mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight"
    ]
    iou_head = _indices(state_dict, r"^mask_decoder\.iou_prediction_head\.layers\.(\d+)\.")
    config = SamConfig(
        vision_config={
            "hidden_size": hidden,
            "output_channels": state_dict["image_encoder.neck.0.weight"].shape[0],
            "num_hidden_layers": num_layers,
            "num_attention_heads": num_heads,
            "num_channels": channels,
            "image_size": image_size,
            "patch_size": patch,
            "mlp_dim": state_dict["image_encoder.blocks.0.mlp.lin1.weight"].shape[0],
            "qkv_bias": "image_encoder.blocks.0.attn.qkv.bias" in state_dict,
            "use_abs_pos": pos is not None,
            "use_rel_pos": use_rel_pos,
            "window_size": window_size,
            "global_attn_indexes": list(global_attn),
            "num_pos_feats": pe.shape[1],
        },
        prompt_encoder_config={
            "hidden_size": prompt_hidden,
            "image_size": image_size,
            "patch_size": patch,
            "mask_input_channels": state_dict["prompt_encoder.mask_downscaling.3.weight"].shape[0],
            "num_point_embeddings": len(
                _indices(state_dict, r"^prompt_encoder\.point_embeddings\.(\d+)\.")
            ),
        },
        mask_decoder_config={
            "hidden_size": decoder_hidden,
            "mlp_dim": state_dict["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0],
            "num_hidden_layers": len(
                _indices(state_dict, r"^mask_decoder\.transformer\.layers\.(\d+)\.")
            ),
            "num_attention_heads": SAM_DECODER_HEADS,
            "attention_downsample_rate": decoder_hidden // internal.shape[0],
            "num_multimask_outputs": state_dict["mask_decoder.mask_tokens.weight"].shape[0] - 1,
            "iou_head_depth": len(iou_head),
            "iou_head_hidden_dim": state_dict[
                "mask_decoder.iou_prediction_head.layers.0.weight"
            ].shape[0],
        },
    )
    variant = "custom"
    if (
        by_dims is not None
        and num_heads == by_dims.num_heads
        and global_attn == by_dims.global_attn_indexes
        and image_size == 1024
        and patch == 16
    ):
        variant = by_dims.name
    logger.info(
        "%s: SAM %s (hidden %d, %d blocks, %d heads, global attention in %s)",
        source,
        variant,
        hidden,
        num_layers,
        num_heads,
        list(global_attn),
    )
    return config, variant


def rename_original_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map segment-anything key names to transformers' SamModel names (tensors are not copied).

    The prompt encoder's random Fourier matrix is shared with the image-embedding positional
    encoding in transformers, which keeps it under two names; both get the same tensor.
    """
    mlp_depth: dict[str, int] = {}
    for key in state_dict:
        if match := _MLP_KEY.match(key):
            prefix, index = match.group(1), int(match.group(2))
            mlp_depth[prefix] = max(mlp_depth.get(prefix, 0), index + 1)

    renamed: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key in _DROPPED_KEYS:
            continue
        new = key
        if match := _MLP_KEY.match(key):
            prefix, index, rest = match.group(1), int(match.group(2)), match.group(3)
            if index == 0:
                new = f"{prefix}.proj_in.{rest}"
            elif index == mlp_depth[prefix] - 1:
                new = f"{prefix}.proj_out.{rest}"
            else:
                new = f"{prefix}.layers.{index - 1}.{rest}"
        else:
            for pattern, replacement in _RENAMES:
                new = pattern.sub(replacement, new)
        renamed[new] = value
    shared = renamed.get("prompt_encoder.shared_embedding.positional_embedding")
    if shared is not None:
        renamed["shared_image_embedding.positional_embedding"] = shared
    return renamed


def _load_failure(exc: BaseException) -> str:
    """The useful part of torch.load's error, without its advice to disable weights_only."""
    text = str(exc)
    if isinstance(exc, EOFError) or not text.strip():
        return "the file is empty or truncated"
    if match := re.search(
        r"WeightsUnpickler error:\s*(.+?)(?:\s+was not an allowed global|\n|$)", text
    ):
        detail = match.group(1).strip().rstrip(".")
        if detail.startswith("Unsupported global"):
            return f"it stores Python objects, not only tensors: {detail}"
        return f"unpickling failed: {detail}"
    return text.strip().splitlines()[0][:200]


def _indices(state_dict: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for key in state_dict if (m := regex.match(key))})


def _describe_keys(kind: str, keys: list[str]) -> str:
    if not keys:
        return ""
    more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
    return f"{len(keys)} {kind} ({', '.join(keys[:3])}{more}); "
