"""A tiny random-weight SAM 3, written offline in well under a second.

The folder is laid out like the released checkpoint's (``config.json``, ``model.safetensors``,
the CLIP tokenizer's files and ``processor_config.json``), so :func:`~.loading.load_sam3` reads
it through exactly the path real weights take. Tests and smoke runs use it on machines without
the (gated) weights or a GPU; its masks are meaningless.

Choices:

- The model is the real ``Sam3Model`` with every width cut to 32 and one or two layers per part:
  about 0.3 M parameters (about 1 MB on disk), a forward pass in tens of milliseconds on a CPU.
- The image side is 112 (8 x 8 patches of 14) instead of 1008; masks come out at 32 x 32 (the
  real model's 288 is also four times its patch grid). Code reads both from the config.
- ``initializer_range`` is 0.1 instead of 0.02: with the default, a model this small returns mask
  logits of about 1e-4, every probability sits at 0.5 and every threshold decides by rounding.
  At 0.1 the logits are of order 0.1-1 and depend on the image and the phrase, like a real
  model's.
- The tokenizer is a byte-level BPE in CLIP's layout built in memory (all 256 byte symbols plus
  merges for a few category words): any text tokenizes and nothing is downloaded. The text
  length stays 32 tokens, as in the real checkpoint.
- The processor file is written by hand: ``Sam3Processor`` cannot be built without torchvision.
  It records the preprocessing that :mod:`.processing` implements (square resize, 1/255,
  mean and std 0.5), so the folder also loads with transformers where torchvision exists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPTokenizer, Sam3Config, Sam3Model

from prelabel.backends.loading import TINY_MARKER, quiet_progress_bars
from prelabel.backends.sam3.loading import IMAGE_MEAN, IMAGE_STD
from prelabel.backends.tokenizers import tiny_clip_bpe_tokenizer

__all__ = ["TINY_SAM3_WORDS", "tiny_sam3_config", "tiny_sam3_tokenizer", "write_tiny_sam3"]

#: Words with merges in the tiny vocabulary; other words fall back to byte symbols.
TINY_SAM3_WORDS = ("person", "car", "road", "sky", "tree", "building", "grass", "dog", "cat")

_SIDE = 112
_PATCH = 14
_WIDTH = 32
_TEXT_LENGTH = 32


def write_tiny_sam3(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random SAM 3 (model, tokenizer, processor file, tiny marker) to ``folder``.

    The same seed gives the same weights. Files of the same names are overwritten, others left
    alone; the global torch RNG is untouched. Returns ``folder``.
    """
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_sam3_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Sam3Model(tiny_sam3_config(tokenizer))
    with quiet_progress_bars():
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    processor = {"image_processor": _image_processor_dict(), "processor_class": "Sam3Processor"}
    (folder / "processor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
    marker = {
        "seed": seed,
        "note": "tiny random-weight model written by `prelabel models tiny`: masks are meaningless",
    }
    (folder / TINY_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return folder


def tiny_sam3_config(tokenizer: CLIPTokenizer | None = None) -> Sam3Config:
    """The tiny model's config (see the module docstring); token ids follow ``tokenizer``."""
    tokenizer = tokenizer or tiny_sam3_tokenizer()
    grid = _SIDE // _PATCH
    small = {"hidden_size": _WIDTH, "num_attention_heads": 2, "intermediate_size": 2 * _WIDTH}
    config = Sam3Config(
        vision_config={
            "backbone_config": {
                "model_type": "sam3_vit_model",
                **small,
                "num_hidden_layers": 2,
                "image_size": _SIDE,
                "patch_size": _PATCH,
                "window_size": 4,
                "global_attn_indexes": [1],
                "pretrain_image_size": _SIDE // 2,
            },
            "fpn_hidden_size": _WIDTH,
            "backbone_feature_sizes": [[grid * 4] * 2, [grid * 2] * 2, [grid] * 2],
        },
        text_config={
            "model_type": "clip_text_model",
            **small,
            "vocab_size": len(tokenizer),
            "projection_dim": _WIDTH,
            "num_hidden_layers": 1,
            "max_position_embeddings": _TEXT_LENGTH,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        geometry_encoder_config={**small, "num_layers": 1},
        detr_encoder_config={**small, "num_layers": 1},
        detr_decoder_config={**small, "num_layers": 2, "num_queries": 10},
        mask_decoder_config={"hidden_size": _WIDTH, "num_attention_heads": 2},
    )
    for sub in _all_configs(config):
        sub.initializer_range = 0.1
    return config


def _all_configs(config: Sam3Config) -> list[Any]:
    vision = config.vision_config
    return [
        config,
        vision,
        vision.backbone_config,
        config.text_config,
        config.geometry_encoder_config,
        config.detr_encoder_config,
        config.detr_decoder_config,
        config.mask_decoder_config,
    ]


def _image_processor_dict() -> dict[str, Any]:
    mask = _SIDE // _PATCH * 4
    return {
        "image_processor_type": "Sam3ImageProcessor",
        "do_convert_rgb": True,
        "do_resize": True,
        "do_rescale": True,
        "do_normalize": True,
        "size": {"height": _SIDE, "width": _SIDE},
        "mask_size": {"height": mask, "width": mask},
        "resample": 2,
        "rescale_factor": 1 / 255,
        "image_mean": list(IMAGE_MEAN),
        "image_std": list(IMAGE_STD),
    }


def tiny_sam3_tokenizer() -> CLIPTokenizer:
    """SAM 3's tiny tokenizer: CLIP's byte-level BPE with merges only for
    :data:`TINY_SAM3_WORDS` and SAM 3's 32 positions
    (:func:`~prelabel.backends.tokenizers.tiny_clip_bpe_tokenizer`)."""
    return tiny_clip_bpe_tokenizer(TINY_SAM3_WORDS, max_length=_TEXT_LENGTH)
