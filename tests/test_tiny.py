"""Tiny random-weight models: loadable by stock transformers, deterministic, offline tokenizers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import (
    AutoModelForMaskGeneration,
    AutoModelForZeroShotObjectDetection,
    AutoProcessor,
    AutoTokenizer,
    CLIPSegForImageSegmentation,
)

from prelabel.backends.grounded_sam.tiny import TINY_WORDS, tiny_bert_tokenizer, tiny_clip_tokenizer
from prelabel.backends.loading import is_tiny_model_dir
from prelabel.weights.tiny import TINY_SUBDIRS, write_tiny_models
from tests.fixtures.images import noise_image

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return noise_image(640, 480)


def load_auto(path: Path, model_cls: type) -> tuple[torch.nn.Module, object]:
    model, info = model_cls.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    return model.eval(), AutoProcessor.from_pretrained(path)


@pytest.mark.parametrize("subdir", ["grounding_dino", "mm_grounding_dino"])
def test_grounding_dino_reloads_with_auto_classes_and_detects(
    tiny_models_dir: Path, image: Image.Image, subdir: str
) -> None:
    model, processor = load_auto(tiny_models_dir / subdir, AutoModelForZeroShotObjectDetection)
    inputs = processor(images=image, text="a person. a car.", return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    results = processor.post_process_grounded_object_detection(
        outputs, inputs.input_ids, threshold=0.0, text_threshold=0.0, target_sizes=[(480, 640)]
    )
    assert outputs.logits.shape[:2] == (1, 30)
    boxes = results[0]["boxes"]
    assert boxes.shape == (30, 4)
    assert torch.isfinite(boxes).all()


def test_sam_reloads_with_auto_classes_and_segments(
    tiny_models_dir: Path, image: Image.Image
) -> None:
    model, processor = load_auto(tiny_models_dir / "sam", AutoModelForMaskGeneration)
    inputs = processor(
        images=image, input_boxes=[[[10, 10, 300, 300], [50, 50, 600, 400]]], return_tensors="pt"
    )
    with torch.no_grad():
        outputs = model(**inputs, multimask_output=False)
    masks = processor.post_process_masks(
        outputs.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"]
    )[0]
    assert masks.shape == (2, 1, 480, 640)
    assert masks.dtype == torch.bool
    # Not degenerate: random logits of order 1 give both values (see tiny.py on init scales).
    assert 0.05 < masks.float().mean() < 0.95
    assert outputs.pred_masks.abs().mean() > 0.01


def test_clipseg_reloads_and_segments(tiny_models_dir: Path, image: Image.Image) -> None:
    # transformers has no Auto class for CLIPSegForImageSegmentation; the processor has one.
    model, processor = load_auto(tiny_models_dir / "clipseg", CLIPSegForImageSegmentation)
    inputs = processor(
        text=["road", "sky", "a tree"], images=[image] * 3, padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (3, 352, 352)
    assert not torch.allclose(logits[0], logits[1])


def test_processors_keep_the_real_preprocessing(tiny_models_dir: Path) -> None:
    sam = AutoProcessor.from_pretrained(tiny_models_dir / "sam").image_processor
    assert sam.size["longest_edge"] == 1024
    assert (sam.pad_size["height"], sam.pad_size["width"]) == (1024, 1024)
    clipseg = AutoProcessor.from_pretrained(tiny_models_dir / "clipseg").image_processor
    assert (clipseg.size["height"], clipseg.size["width"]) == (352, 352)
    dino = AutoProcessor.from_pretrained(tiny_models_dir / "grounding_dino").image_processor
    # Smaller than the real 800/1333, for speed; the pipeline reads it from the processor.
    assert (dino.size["shortest_edge"], dino.size["longest_edge"]) == (256, 512)
    for processor in (sam, clipseg, dino):
        assert list(processor.image_mean) == pytest.approx(IMAGENET_MEAN)
        assert list(processor.image_std) == pytest.approx(IMAGENET_STD)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path: Path) -> None:
    rng_before = torch.random.get_rng_state()
    first = write_tiny_models(tmp_path / "a", seed=7)
    second = write_tiny_models(tmp_path / "b", seed=7)
    other = write_tiny_models(tmp_path / "c", seed=8)
    assert torch.equal(torch.random.get_rng_state(), rng_before)

    for sub in TINY_SUBDIRS:
        a = load_file(first / sub / "model.safetensors")
        b = load_file(second / sub / "model.safetensors")
        c = load_file(other / sub / "model.safetensors")
        assert a.keys() == b.keys() == c.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), sub
        assert not all(torch.equal(a[k], c[k]) for k in a), sub


def test_every_directory_carries_the_marker(tiny_models_dir: Path, tmp_path: Path) -> None:
    for sub in TINY_SUBDIRS:
        assert is_tiny_model_dir(tiny_models_dir / sub)
        assert (tiny_models_dir / sub / "model.safetensors").is_file()
    assert not is_tiny_model_dir(tiny_models_dir)
    assert not is_tiny_model_dir(tmp_path)


def test_bert_tokenizer_round_trips_any_lowercase_text(tiny_models_dir: Path) -> None:
    tokenizer = tiny_bert_tokenizer()
    text = "a person . a red bicycle-2 ."
    ids = tokenizer(text).input_ids
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a person. a red bicycle - 2."
    # Known words are one token, others fall back to letter pieces.
    assert len(tokenizer.tokenize("person")) == 1
    assert tokenizer.tokenize("bike") == ["b", "##i", "##k", "##e"]
    saved = AutoTokenizer.from_pretrained(tiny_models_dir / "grounding_dino")
    assert saved(text).input_ids == ids


def test_clip_tokenizer_round_trips_any_text(tiny_models_dir: Path) -> None:
    tokenizer = tiny_clip_tokenizer()
    text = "a building and a café"
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert ids[-1] == tokenizer.eos_token_id == len(tokenizer) - 1
    assert tokenizer.decode(ids, skip_special_tokens=True).strip() == text
    for word in TINY_WORDS:
        assert len(tokenizer.tokenize(word)) == 1, word
    saved = AutoTokenizer.from_pretrained(tiny_models_dir / "clipseg")
    assert saved(text).input_ids == ids
    assert saved.model_max_length == 77
