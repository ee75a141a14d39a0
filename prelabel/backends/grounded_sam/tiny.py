"""Tiny random-weight versions of the grounded_sam back-end's models, built offline in a second.

They use the real model, processor and tokenizer classes with very small configs;
:func:`prelabel.weights.tiny.write_tiny_models` saves them with ``save_pretrained`` in the
``--models DIR`` layout, so they load through exactly the code path real weights use
(:func:`prelabel.backends.grounded_sam.loading.load_models`). Tests and smoke runs use them on
machines without weights or a GPU. Their masks are meaningless.

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
- ``mm_grounding_dino/`` is an MM Grounding DINO (``MMGroundingDinoForObjectDetection``) of
  the same size with the same processor: ``models.grounding_dino`` may name it, as it may name
  a real MM Grounding DINO or LLMDet checkpoint.
- Each directory carries :data:`~prelabel.backends.loading.TINY_MARKER`, which is how loading
  knows to warn that masks are meaningless.
"""

from __future__ import annotations

import string
from typing import Any

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
    MMGroundingDinoConfig,
    MMGroundingDinoForObjectDetection,
    SamConfig,
    SamImageProcessorPil,
    SamModel,
    SamProcessor,
    ViTImageProcessorPil,
)

from prelabel.backends.tokenizers import tiny_clip_bpe_tokenizer

__all__ = [
    "TINY_WORDS",
    "build_tiny_mm_grounding_dino",
    "build_tiny_models",
    "tiny_bert_tokenizer",
    "tiny_clip_tokenizer",
    "tiny_sam_config",
]

#: What a tiny builder returns: subdirectory -> (model, processor or None), unsaved.
Built = dict[str, tuple[Any, Any]]

#: Whole words in both tiny vocabularies; other words fall back to letters (BERT) or bytes (CLIP).
TINY_WORDS = ("person", "car", "road", "sky", "tree", "building", "grass", "dog", "cat")

#: ImageNet statistics, which all three real checkpoints normalise with.
_IMAGENET_MEAN = [0.485, 0.456, 0.406]
_IMAGENET_STD = [0.229, 0.224, 0.225]

_GROUNDING_DINO_SIZE = {"shortest_edge": 256, "longest_edge": 512}
_CLIPSEG_SIZE = {"height": 352, "width": 352}


def build_tiny_models() -> Built:
    """Tiny Grounding DINO, SAM and CLIPSeg under their ``--models DIR`` subdirectory names.

    Weights come from the global torch RNG: the caller seeds it (and forks it, to leave the
    caller's stream alone), so one seed gives the same weights, byte for byte.
    """
    bert = tiny_bert_tokenizer()
    clip = tiny_clip_tokenizer()
    return {
        "grounding_dino": (
            GroundingDinoForObjectDetection(_grounding_dino_config(len(bert))),
            _grounding_dino_processor(bert),
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
    }


def build_tiny_mm_grounding_dino() -> Built:
    """A tiny MM Grounding DINO in ``mm_grounding_dino/``, the Grounding DINO processor with
    it (as the released MM Grounding DINO and LLMDet checkpoints ship it)."""
    bert = tiny_bert_tokenizer()
    config = MMGroundingDinoConfig(**_grounding_dino_fields(len(bert)))
    return {
        "mm_grounding_dino": (
            MMGroundingDinoForObjectDetection(config),
            _grounding_dino_processor(bert),
        )
    }


def _grounding_dino_processor(bert: BertTokenizer) -> GroundingDinoProcessor:
    return GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessorPil(
            size=_GROUNDING_DINO_SIZE, image_mean=_IMAGENET_MEAN, image_std=_IMAGENET_STD
        ),
        tokenizer=bert,
    )


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
    """CLIPSeg's tiny tokenizer: CLIP's byte-level BPE with merges only for :data:`TINY_WORDS`
    and CLIPSeg's 77 positions (:func:`~prelabel.backends.tokenizers.tiny_clip_bpe_tokenizer`)."""
    return tiny_clip_bpe_tokenizer(TINY_WORDS, max_length=77)


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


def _grounding_dino_config(vocab_size: int) -> GroundingDinoConfig:
    return GroundingDinoConfig(**_grounding_dino_fields(vocab_size))


def _grounding_dino_fields(vocab_size: int) -> dict[str, Any]:
    # decoder_layers must be at least 2: with 1, construction fails on the bbox_embed tying regex.
    return dict(
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
