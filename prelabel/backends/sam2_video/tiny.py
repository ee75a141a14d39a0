"""A tiny random-weight SAM 2 video model for tests and smoke runs (model only: its processors
need torchvision, :mod:`.frames` replaces them).

It works on a 256 square instead of 1024, so a tracking step takes about 0.1 s on a CPU; the
project's own preprocessing reads the size from the config. Its hidden size is 128: the memory
attention hard-codes a 64-wide memory, and the object pointers are split into 64-wide pieces.
:func:`prelabel.weights.tiny.write_tiny_models` saves it as ``sam2_video/``.
"""

from __future__ import annotations

from typing import Any

from transformers import Sam2VideoConfig, Sam2VideoModel

from prelabel.backends.sam2_video.loading import SAM2_VIDEO_SUBDIR

__all__ = ["build_tiny_sam2_video", "tiny_sam2_video_config"]


def build_tiny_sam2_video() -> dict[str, tuple[Any, Any]]:
    """``{"sam2_video": (model, None)}``, weights from the global torch RNG (the caller seeds)."""
    return {SAM2_VIDEO_SUBDIR: (Sam2VideoModel(tiny_sam2_video_config()), None)}


def tiny_sam2_video_config(**overrides: Any) -> Sam2VideoConfig:
    """The tiny SAM 2 video config (see the module docstring); ``overrides`` replace top-level
    fields, e.g. ``num_maskmem=3`` for a shorter look-back in tests."""
    hidden = 128  # above 64 and a multiple of the 64-wide memory (object pointer splits)
    side = 256
    fields: dict[str, Any] = {
        "vision_config": {
            "backbone_config": {
                "model_type": "sam2_hiera_det_model",
                "image_size": [side, side],
                "hidden_size": 16,
                "num_attention_heads": 1,
                "blocks_per_stage": [1, 1, 2, 1],
                "embed_dim_per_stage": [16, 32, 64, 128],
                "num_attention_heads_per_stage": [1, 1, 2, 2],
                "window_size_per_stage": [8, 4, 14, 7],
                # A global block may not open a stage (its pooled window would be 0).
                "global_attention_blocks": [3],
                "window_positional_embedding_background_size": [7, 7],
            },
            "backbone_channel_list": [128, 64, 32, 16],
            "backbone_feature_sizes": [[side // 4] * 2, [side // 8] * 2, [side // 16] * 2],
            "fpn_hidden_size": hidden,
        },
        "prompt_encoder_config": {"hidden_size": hidden, "image_size": side},
        "mask_decoder_config": {
            "hidden_size": hidden,
            "mlp_dim": 128,
            "num_attention_heads": 2,
            "iou_head_hidden_dim": 32,
        },
        "image_size": side,
        "memory_attention_hidden_size": hidden,
        "memory_attention_num_layers": 1,
        "memory_attention_feed_forward_hidden_size": 128,
        "memory_attention_rope_feat_sizes": [side // 16] * 2,
        "memory_encoder_hidden_size": hidden,
        "memory_encoder_output_channels": 64,
        "mask_downsampler_embed_dim": hidden,
        "memory_fuser_embed_dim": hidden,
        "memory_fuser_intermediate_dim": 128,
        "memory_fuser_num_layers": 1,
    }
    return Sam2VideoConfig(**(fields | overrides))
