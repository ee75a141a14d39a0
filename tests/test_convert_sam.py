"""The offline converter from original segment-anything checkpoints to transformers' SamModel.

segment-anything itself cannot be installed next to torch without torchvision, so checkpoints
are made from a random transformers SamModel renamed into the original layout
(tests/fixtures/models.py). Two kinds of check keep that from being circular: the generated
files must contain key names copied from segment-anything's modules (and ViT-B's real count of
314 tensors), and single keys are converted against transformers' own conversion table.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import SamConfig, SamModel, SamProcessor

from prelabel.backends.grounded_sam.convert_sam import (
    SAM_VARIANTS,
    convert_sam_checkpoint,
    infer_sam_config,
    rename_original_keys,
)
from prelabel.errors import ModelLoadError
from tests.fixtures.models import (
    original_sam_state_dict,
    small_sam_config,
    write_original_sam_checkpoint,
)

VARIANT_CONFIGS = {
    v.name: {
        "hidden_size": v.hidden_size,
        "num_hidden_layers": v.num_layers,
        "num_attention_heads": v.num_heads,
        "global_attn_indexes": list(v.global_attn_indexes),
    }
    for v in SAM_VARIANTS
}

#: Names as segment_anything/modeling/*.py create them (ImageEncoderViT, PromptEncoder,
#: PositionEmbeddingRandom, MaskDecoder and its MLP, TwoWayTransformer, MLPBlock, LayerNorm2d).
ORIGINAL_KEYS = [
    "image_encoder.pos_embed",
    "image_encoder.patch_embed.proj.weight",
    "image_encoder.blocks.0.norm1.weight",
    "image_encoder.blocks.0.attn.qkv.weight",
    "image_encoder.blocks.0.attn.rel_pos_h",
    "image_encoder.blocks.0.mlp.lin1.weight",
    "image_encoder.neck.0.weight",
    "image_encoder.neck.3.bias",
    "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
    "prompt_encoder.point_embeddings.3.weight",
    "prompt_encoder.not_a_point_embed.weight",
    "prompt_encoder.mask_downscaling.6.weight",
    "prompt_encoder.no_mask_embed.weight",
    "mask_decoder.iou_token.weight",
    "mask_decoder.mask_tokens.weight",
    "mask_decoder.transformer.layers.1.norm4.weight",
    "mask_decoder.transformer.layers.0.cross_attn_image_to_token.out_proj.weight",
    "mask_decoder.transformer.final_attn_token_to_image.q_proj.weight",
    "mask_decoder.transformer.norm_final_attn.weight",
    "mask_decoder.output_upscaling.3.weight",
    "mask_decoder.output_hypernetworks_mlps.0.layers.0.weight",
    "mask_decoder.output_hypernetworks_mlps.3.layers.2.bias",
    "mask_decoder.iou_prediction_head.layers.2.weight",
]


def meta_original(variant: str) -> dict[str, torch.Tensor]:
    """A real-size original-layout state dict on the meta device: shapes without memory."""
    with torch.device("meta"):
        model = SamModel(SamConfig(vision_config=VARIANT_CONFIGS[variant]))
    return original_sam_state_dict(model.state_dict())


@pytest.mark.parametrize("variant", ["vit_b", "vit_l", "vit_h"])
def test_variant_is_detected_from_real_size_shapes(variant: str) -> None:
    state = meta_original(variant)
    assert set(ORIGINAL_KEYS) <= state.keys()
    # 14 tensors per encoder block plus 146 elsewhere; ViT-B's 314 is the count of Meta's file.
    assert len(state) == 14 * VARIANT_CONFIGS[variant]["num_hidden_layers"] + 146
    config, detected = infer_sam_config(state)
    assert detected == variant
    expected = VARIANT_CONFIGS[variant]
    vision = config.vision_config
    assert vision.hidden_size == expected["hidden_size"]
    assert vision.num_attention_heads == expected["num_attention_heads"]
    assert list(vision.global_attn_indexes) == expected["global_attn_indexes"]
    assert vision.window_size == 14
    assert vision.mlp_dim == 4 * expected["hidden_size"]
    assert config.mask_decoder_config.num_attention_heads == 8


def test_vit_b_has_the_key_count_of_metas_checkpoint() -> None:
    assert len(meta_original("vit_b")) == 314


@pytest.mark.parametrize(
    ("original", "converted"),
    [
        ("image_encoder.blocks.7.norm2.bias", "vision_encoder.layers.7.layer_norm2.bias"),
        ("image_encoder.blocks.0.attn.rel_pos_w", "vision_encoder.layers.0.attn.rel_pos_w"),
        ("image_encoder.patch_embed.proj.weight", "vision_encoder.patch_embed.projection.weight"),
        ("image_encoder.neck.2.weight", "vision_encoder.neck.conv2.weight"),
        ("prompt_encoder.point_embeddings.2.weight", "prompt_encoder.point_embed.2.weight"),
        ("prompt_encoder.mask_downscaling.4.bias", "prompt_encoder.mask_embed.layer_norm2.bias"),
        ("mask_decoder.output_upscaling.1.weight", "mask_decoder.upscale_layer_norm.weight"),
        (
            "mask_decoder.transformer.layers.1.norm3.weight",
            "mask_decoder.transformer.layers.1.layer_norm3.weight",
        ),
        (
            "mask_decoder.transformer.norm_final_attn.bias",
            "mask_decoder.transformer.layer_norm_final_attn.bias",
        ),
        (
            "mask_decoder.output_hypernetworks_mlps.2.layers.0.weight",
            "mask_decoder.output_hypernetworks_mlps.2.proj_in.weight",
        ),
        (
            "mask_decoder.output_hypernetworks_mlps.2.layers.1.weight",
            "mask_decoder.output_hypernetworks_mlps.2.layers.0.weight",
        ),
        (
            "mask_decoder.iou_prediction_head.layers.2.bias",
            "mask_decoder.iou_prediction_head.proj_out.bias",
        ),
    ],
)
def test_keys_follow_transformers_conversion_table(original: str, converted: str) -> None:
    state = dict.fromkeys(meta_original("vit_b"))
    assert original in state
    assert converted in rename_original_keys(state)


def test_round_trip_reproduces_the_reference_model(tmp_path: Path) -> None:
    checkpoint = tmp_path / "sam_small.pth"
    reference = write_original_sam_checkpoint(checkpoint, seed=3)
    out = tmp_path / "sam"

    assert convert_sam_checkpoint(checkpoint, out) == "custom"

    converted = SamModel.from_pretrained(out).eval()
    ref_state, new_state = reference.state_dict(), converted.state_dict()
    assert ref_state.keys() == new_state.keys()
    for key, value in ref_state.items():
        assert torch.equal(value, new_state[key]), key

    pixels = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[[10.0, 20.0, 300.0, 400.0], [500.0, 500.0, 900.0, 1000.0]]])
    points = torch.tensor([[[[100.0, 200.0], [600.0, 700.0]]]])
    with torch.no_grad():
        emb_ref = reference.get_image_embeddings(pixels)
        emb_new = converted.get_image_embeddings(pixels)
        by_box = [
            m(image_embeddings=e, input_boxes=boxes)
            for m, e in [(reference, emb_ref), (converted, emb_new)]
        ]
        by_point = [
            m(image_embeddings=e, input_points=points, input_labels=torch.tensor([[[1, 0]]]))
            for m, e in [(reference, emb_ref), (converted, emb_new)]
        ]
    # Logits of order 1, so agreement at 1e-5 is a real check, not two near-zero tensors.
    assert by_box[0].pred_masks.abs().mean() > 0.05
    torch.testing.assert_close(emb_new, emb_ref, atol=1e-5, rtol=1e-5)
    for ref_out, new_out in (by_box, by_point):
        torch.testing.assert_close(new_out.pred_masks, ref_out.pred_masks, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(new_out.iou_scores, ref_out.iou_scores, atol=1e-5, rtol=1e-5)

    # The same weights under another layout (4 decoder heads instead of SAM's 8) give other
    # masks: the comparison above also checks the config the converter inferred.
    wrong = small_sam_config()
    wrong.mask_decoder_config.num_attention_heads = 4
    miswired = SamModel(wrong).eval()
    miswired.load_state_dict(new_state)
    with torch.no_grad():
        other = miswired(image_embeddings=emb_ref, input_boxes=boxes).pred_masks
    assert not torch.allclose(other, by_box[0].pred_masks, atol=1e-3)


def test_output_has_sams_real_preprocessing(tmp_path: Path) -> None:
    checkpoint = tmp_path / "sam_small.pth"
    write_original_sam_checkpoint(checkpoint)
    convert_sam_checkpoint(checkpoint, tmp_path / "sam")

    processor = SamProcessor.from_pretrained(tmp_path / "sam")
    image_processor = processor.image_processor
    assert type(image_processor).__name__ == "SamImageProcessorPil"
    assert image_processor.size["longest_edge"] == 1024
    assert (image_processor.pad_size["height"], image_processor.pad_size["width"]) == (1024, 1024)
    assert list(image_processor.image_mean) == pytest.approx([0.485, 0.456, 0.406])
    assert list(image_processor.image_std) == pytest.approx([0.229, 0.224, 0.225])
    # SAM's pixel_mean/pixel_std are the same statistics on a 0-255 scale.
    assert [m * 255 for m in image_processor.image_mean] == pytest.approx([123.675, 116.28, 103.53])
    assert (tmp_path / "sam" / "model.safetensors").is_file()


def test_wrapped_checkpoint_with_pixel_buffers_converts(tmp_path: Path) -> None:
    """Fine-tuning scripts save {"model": ...} with DataParallel's prefix and the pixel buffers."""
    plain = tmp_path / "plain.pth"
    reference = write_original_sam_checkpoint(plain)
    state = torch.load(plain, weights_only=True)
    state["pixel_mean"] = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    state["pixel_std"] = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, wrapped)

    convert_sam_checkpoint(wrapped, tmp_path / "sam")

    converted = SamModel.from_pretrained(tmp_path / "sam")
    key = "vision_encoder.layers.1.attn.rel_pos_h"
    assert torch.equal(converted.state_dict()[key], reference.state_dict()[key])


def test_a_file_that_is_not_a_sam_checkpoint_is_named(tmp_path: Path) -> None:
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.bias": torch.zeros(10)}, other)

    with pytest.raises(ModelLoadError, match="not an original SAM checkpoint") as info:
        convert_sam_checkpoint(other, tmp_path / "out")

    assert str(other) in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"definitely not a checkpoint\n", "not a readable PyTorch checkpoint"),
        (b"", "not a readable PyTorch checkpoint"),
    ],
)
def test_unreadable_files_are_refused(tmp_path: Path, content: bytes, expected: str) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(content)
    with pytest.raises(ModelLoadError, match=expected) as info:
        convert_sam_checkpoint(bad, tmp_path / "out")
    assert str(bad) in str(info.value)


def test_pickled_code_is_not_executed(tmp_path: Path) -> None:
    pickled = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), pickled)  # a whole module needs unpickling classes
    with pytest.raises(ModelLoadError, match="not a readable PyTorch checkpoint"):
        convert_sam_checkpoint(pickled, tmp_path / "out")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such file"):
        convert_sam_checkpoint(tmp_path / "absent.pth", tmp_path / "out")


def test_a_missing_tensor_is_an_error_not_a_random_weight(tmp_path: Path) -> None:
    checkpoint = tmp_path / "sam_small.pth"
    write_original_sam_checkpoint(checkpoint)
    state = torch.load(checkpoint, weights_only=True)
    del state["mask_decoder.transformer.layers.1.norm2.bias"]
    torch.save(state, checkpoint)

    with pytest.raises(ModelLoadError, match=r"layers\.1\.layer_norm2\.bias"):
        convert_sam_checkpoint(checkpoint, tmp_path / "out")


def test_a_tensor_of_the_wrong_shape_is_an_error(tmp_path: Path) -> None:
    checkpoint = tmp_path / "sam_small.pth"
    write_original_sam_checkpoint(checkpoint)
    state = torch.load(checkpoint, weights_only=True)
    state["mask_decoder.iou_prediction_head.layers.1.weight"] = torch.zeros(32, 31)
    torch.save(state, checkpoint)

    with pytest.raises(ModelLoadError, match="do not fit"):
        convert_sam_checkpoint(checkpoint, tmp_path / "out")


@pytest.mark.slow
def test_real_size_vit_b_file_converts(tmp_path: Path) -> None:
    """A full-size ViT-B file (360 MB of zeros) goes through the meta-device path in about 2 s."""
    state = {k: torch.zeros(v.shape) for k, v in meta_original("vit_b").items()}
    state["image_encoder.blocks.5.attn.rel_pos_h"] = torch.full((127, 64), 0.5)
    checkpoint = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(state, checkpoint)
    del state

    assert convert_sam_checkpoint(checkpoint, tmp_path / "sam") == "vit_b"

    converted = SamModel.from_pretrained(tmp_path / "sam")
    assert converted.config.vision_config.global_attn_indexes == [2, 5, 8, 11]
    rel_pos = converted.state_dict()["vision_encoder.layers.5.attn.rel_pos_h"]
    assert torch.equal(rel_pos, torch.full((127, 64), 0.5))
