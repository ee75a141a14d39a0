"""Tiny random-weight versions of the three models, written offline in about a second.

They use the real model, processor and tokenizer classes with very small configs, and are saved
with ``save_pretrained`` in the ``--models DIR`` layout, so they load through exactly the code
path real weights use (:func:`prelabel.pipeline.loading.load_models`). Tests and smoke runs use
them on machines without weights or a GPU. Their masks are meaningless.

Deliberate choices:

- The tokenizers are built from an in-memory vocabulary: a WordPiece vocabulary of letters, digits
  and a few category words for Grounding DINO's BERT, and a byte-level BPE vocabulary (all 256
  byte symbols plus merges for the same words) for CLIPSeg. Any text tokenizes, nothing is
  downloaded.
- SAM and CLIPSeg keep their real preprocessing (SAM: longest side 1024, padded to 1024x1024;
  CLIPSeg: 352x352), because the pipeline's coordinate handling depends on them. Grounding DINO's
  processor resizes to a shortest side of 256 (longest 512) instead of 800/1333, which keeps a
  tiny forward pass under 0.1 s; the pipeline reads sizes from the processor, never assumes them.
- Grounding DINO keeps the real text length (256 tokens), so long prompt lists behave as with
  the real checkpoint.
- SAM 2 video (``sam2_video/``, model only: its processors need torchvision) works on a 256
  square instead of 1024, so a tracking step takes about 0.1 s on a CPU; the project's own
  preprocessing reads the size from the config. Its hidden size is 128: the memory attention
  hard-codes a 64-wide memory, and the object pointers are split into 64-wide pieces.
- Each directory carries :data:`~prelabel.pipeline.loading.TINY_MARKER`, which is how loading
  knows to warn that masks are meaningless.
"""

from __future__ import annotations

import json
import logging
import string
from pathlib import Path
from typing import Any

import torch
from transformers import (
    BertTokenizer,
    CLIPSegConfig,
    CLIPSegForImageSegmentation,
    CLIPSegProcessor,
    CLIPTokenizer,
    GroundingDinoConfig,
    GroundingDinoForObjectDetection,
    GroundingDinoImageProcessorPil,
    GroundingDinoProcessor,
    Sam2VideoConfig,
    Sam2VideoModel,
    SamConfig,
    SamImageProcessorPil,
    SamModel,
    SamProcessor,
    ViTImageProcessorPil,
)

from prelabel.pipeline.loading import (
    MODEL_SUBDIRS,
    TINY_MARKER,
    is_tiny_model_dir,
    quiet_progress_bars,
)
from prelabel.pipeline.loading_video import SAM2_VIDEO_SUBDIR

__all__ = [
    "TINY_SUBDIRS",
    "TINY_WORDS",
    "is_tiny_model_dir",
    "tiny_bert_tokenizer",
    "tiny_clip_tokenizer",
    "tiny_sam2_video_config",
    "write_tiny_models",
]

logger = logging.getLogger(__name__)

#: Every subdirectory ``write_tiny_models`` writes: the image models' and ``sam2_video``.
TINY_SUBDIRS = (*MODEL_SUBDIRS.values(), SAM2_VIDEO_SUBDIR)

#: Whole words in both tiny vocabularies; other words fall back to letters (BERT) or bytes (CLIP).
TINY_WORDS = ("person", "car", "road", "sky", "tree", "building", "grass", "dog", "cat")

#: ImageNet statistics, which all three real checkpoints normalise with.
_IMAGENET_MEAN = [0.485, 0.456, 0.406]
_IMAGENET_STD = [0.229, 0.224, 0.225]

_GROUNDING_DINO_SIZE = {"shortest_edge": 256, "longest_edge": 512}
_CLIPSEG_SIZE = {"height": 352, "width": 352}


def write_tiny_models(out_dir: Path, seed: int = 0) -> Path:
    """Write tiny Grounding DINO, SAM, CLIPSeg and SAM 2 video models to ``out_dir/<subdir>``
    and return ``out_dir``.

    The same seed gives the same weights, byte for byte. Existing files of the same names are
    overwritten; other files in ``out_dir`` are left alone. The global torch RNG is untouched.
    """
    out_dir = Path(out_dir).expanduser()
    bert = tiny_bert_tokenizer()
    clip = tiny_clip_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        built: dict[str, tuple[Any, Any]] = {
            "grounding_dino": (
                GroundingDinoForObjectDetection(_grounding_dino_config(len(bert))),
                GroundingDinoProcessor(
                    image_processor=GroundingDinoImageProcessorPil(
                        size=_GROUNDING_DINO_SIZE,
                        image_mean=_IMAGENET_MEAN,
                        image_std=_IMAGENET_STD,
                    ),
                    tokenizer=bert,
                ),
            ),
            "sam": (
                SamModel(tiny_sam_config()),
                SamProcessor(image_processor=SamImageProcessorPil()),
            ),
            "clipseg": (
                CLIPSegForImageSegmentation(_clipseg_config(clip)),
                CLIPSegProcessor(
                    image_processor=ViTImageProcessorPil(
                        size=_CLIPSEG_SIZE, image_mean=_IMAGENET_MEAN, image_std=_IMAGENET_STD
                    ),
                    tokenizer=clip,
                ),
            ),
            SAM2_VIDEO_SUBDIR: (Sam2VideoModel(tiny_sam2_video_config()), None),
        }
    marker = {
        "seed": seed,
        "note": "tiny random-weight model written by `prelabel models tiny`: masks are meaningless",
    }
    with quiet_progress_bars():
        for role, (model, processor) in built.items():
            target = out_dir / MODEL_SUBDIRS.get(role, role)
            target.mkdir(parents=True, exist_ok=True)
            model.save_pretrained(target)
            if processor is not None:
                processor.save_pretrained(target)
            (target / TINY_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
            logger.info("wrote tiny %s to %s", role, target)
    return out_dir


def tiny_bert_tokenizer() -> BertTokenizer:
    """A lower-casing WordPiece tokenizer: BERT's specials, punctuation, a-z, 0-9, and words.

    Every letter also exists as a ``##`` continuation piece, so any lower-case word tokenizes into
    known pieces and Grounding DINO's phrase-to-token mapping sees realistic multi-token words.
    """
    chars = list(string.ascii_lowercase + string.digits)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "-", "'"]
    vocab += chars + [f"##{c}" for c in chars] + list(TINY_WORDS)
    return BertTokenizer(
        vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True, model_max_length=256
    )


def tiny_clip_tokenizer() -> CLIPTokenizer:
    """A byte-level BPE tokenizer in CLIP's layout, with merges only for :data:`TINY_WORDS`.

    The vocabulary order follows CLIP's (bytes, bytes with ``</w>``, merged symbols, then the two
    specials), so ``<|endoftext|>`` is the last id, as CLIPSeg's pooling expects.
    """
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [f"{s}</w>" for s in symbols]
    merges: list[tuple[str, str]] = []
    for word in TINY_WORDS:
        current = word[0]
        for i, char in enumerate(word[1:], start=1):
            piece = f"{char}</w>" if i == len(word) - 1 else char
            if (current, piece) not in merges:
                merges.append((current, piece))
            current += piece
            if current not in vocab:
                vocab.append(current)
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    # Merges must be 2-tuples: the tokenizers library rejects "a b" strings.
    return CLIPTokenizer(
        vocab={token: i for i, token in enumerate(vocab)}, merges=merges, model_max_length=77
    )


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table (no whitespace or controls)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return dict(sorted(table.items()))


def tiny_sam_config(decoder_heads: int = 2) -> SamConfig:
    """The tiny SAM's config; ``decoder_heads=8`` gives the decoder layout of released SAMs."""
    # 2 x num_pos_feats must equal the prompt encoder's hidden size (the shared embedding).
    # The default init scales (1e-10 for the vision encoder, 0.02 elsewhere; irrelevant for loaded
    # checkpoints) give image embeddings of about 1e-21 and mask logits of about 1e-5 in a model
    # this small. Larger ones give logits of order 0.1-1 that depend on the image, like real SAM.
    return SamConfig(
        vision_config={
            "hidden_size": 32,
            "output_channels": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 1024,
            "patch_size": 16,
            "window_size": 8,
            "global_attn_indexes": [1],
            "mlp_dim": 64,
            "num_pos_feats": 16,
            "initializer_range": 0.02,
        },
        prompt_encoder_config={"hidden_size": 32, "image_size": 1024, "mask_input_channels": 4},
        mask_decoder_config={
            "hidden_size": 32,
            "mlp_dim": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": decoder_heads,
            "iou_head_hidden_dim": 32,
        },
        initializer_range=0.2,
    )


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


def _grounding_dino_config(vocab_size: int) -> GroundingDinoConfig:
    # decoder_layers must be at least 2: with 1, construction fails on the bbox_embed tying regex.
    return GroundingDinoConfig(
        backbone_config={
            "model_type": "swin",
            "embed_dim": 16,
            "depths": [1, 1, 1, 1],
            "num_heads": [1, 1, 2, 2],
            "window_size": 7,
            "out_features": ["stage2", "stage3", "stage4"],
        },
        text_config={
            "model_type": "bert",
            "vocab_size": vocab_size,
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 256,
        },
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=30,
        num_feature_levels=4,
        max_text_len=256,
    )


def _clipseg_config(tokenizer: CLIPTokenizer) -> CLIPSegConfig:
    # extract_layers entries must be below the vision layer count (the model reads
    # hidden_states[i + 1]); the text pooling looks for eos_token_id, which must match the
    # tokenizer's.
    return CLIPSegConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
            "image_size": 352,
            "patch_size": 16,
        },
        projection_dim=32,
        extract_layers=[0, 1, 2],
        reduce_dim=16,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
    )
