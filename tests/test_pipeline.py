"""End to end on tiny random-weight models loaded through the real loading path.

Random weights make the masks meaningless, so these tests pin down contracts (sizes, id map vs
segments, one SAM encoder pass, equivalence of the shared-embedding shortcuts) rather than
quality. Thresholds of 0 force every stage to produce output, and every test asserts that the
output it checks is not empty. Which pixel gets which category is pinned by
tests/test_pipeline_reference.py and tests/test_pipeline_known_answer.py. The seed method's
erosion is 2 pixels because the tiny CLIPSeg map is speckled and the default 20 erases every
region.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prelabel.backends import load_backend, option_reader
from prelabel.backends.grounded_sam.backend import GroundedSam
from prelabel.config import ModelSettings, PipelineSettings, Settings
from prelabel.pipeline.pipeline import Pipeline
from prelabel.taxonomy import Category, build_taxonomy
from tests.fixtures.images import noise_image

pytestmark = pytest.mark.slow

CATEGORIES = [
    Category(1, "person", True),
    Category(2, "car", True),
    Category(3, "sky", False),
    Category(4, "road", False),
]
OPEN = PipelineSettings(
    box_threshold=0.0,
    text_threshold=0.0,
    mask_threshold=0.0,
    shrink_kernel=2,
    min_area=0,
    max_detections=5,
)
METHODS = ["seed", "regions"]


def _image(width: int = 96, height: int = 64, seed: int = 0) -> Image.Image:
    return noise_image(width, height, seed, high=255)


@pytest.fixture(scope="module")
def pipeline(tiny_models: object) -> Pipeline:
    return Pipeline(GroundedSam(tiny_models), OPEN)


def _check_contract(prediction: object, size: tuple[int, int]) -> None:
    assert prediction.id_map.dtype == np.uint32
    assert prediction.size == size
    ids = set(np.unique(prediction.id_map).tolist()) - {0}
    assert ids, "the prediction is empty"
    assert ids == {s.id for s in prediction.segments}
    for seg in prediction.segments:
        assert seg.area == int((prediction.id_map == seg.id).sum())


@pytest.mark.parametrize("method", METHODS)
def test_predict_runs_every_stage_and_keeps_the_contract(tiny_models: object, method: str) -> None:
    # One thing leaves a third of the image to stuff; no erosion keeps the seed's points there.
    update = {"stuff_method": method, "max_detections": 1, "shrink_kernel": 0}
    settings = OPEN.model_copy(update=update)
    taxonomy = build_taxonomy(CATEGORIES, {}, settings)
    timings: dict[str, float] = {}
    prediction = Pipeline(GroundedSam(tiny_models), settings).predict(
        _image(), taxonomy, timings=timings
    )
    _check_contract(prediction, (96, 64))
    assert set(timings) == {"detect", "embed", "things", "coarse", "stuff", "merge"}
    assert {s.category_id for s in prediction.segments} <= {1, 2, 3, 4}
    assert all(s.is_thing == (s.category_id in (1, 2)) for s in prediction.segments)
    assert {s.is_thing for s in prediction.segments} == {True, False}  # things and stuff


def test_things_alone_give_instances(pipeline: Pipeline) -> None:
    taxonomy = build_taxonomy(CATEGORIES[:2], {}, OPEN)
    prediction = pipeline.predict(_image(), taxonomy)
    _check_contract(prediction, (96, 64))
    assert prediction.segments
    assert all(s.is_thing and s.category_id in (1, 2) for s in prediction.segments)


@pytest.mark.parametrize("method", METHODS)
def test_stuff_alone_gives_one_segment_per_category(tiny_models: object, method: str) -> None:
    settings = OPEN.model_copy(update={"stuff_method": method})
    taxonomy = build_taxonomy(CATEGORIES[2:], {}, settings)
    prediction = Pipeline(GroundedSam(tiny_models), settings).predict(_image(), taxonomy)
    _check_contract(prediction, (96, 64))
    stuff = [s.category_id for s in prediction.segments]
    assert stuff and sorted(stuff) == sorted(set(stuff)) and set(stuff) <= {3, 4}
    assert not any(s.is_thing for s in prediction.segments)


def test_one_sam_encoder_pass_per_image(pipeline: Pipeline) -> None:
    calls = []
    hook = pipeline.backend.models.sam.vision_encoder.register_forward_hook(
        lambda *a: calls.append(1)
    )
    try:
        taxonomy = build_taxonomy(CATEGORIES, {}, OPEN)
        for seed in range(3):
            pipeline.predict(_image(seed=seed), taxonomy)
    finally:
        hook.remove()
    assert len(calls) == 3


@pytest.mark.parametrize("method", METHODS)
def test_deterministic(tiny_models: object, method: str) -> None:
    settings = OPEN.model_copy(update={"stuff_method": method, "max_detections": 1})
    taxonomy = build_taxonomy(CATEGORIES, {}, settings)
    a = Pipeline(GroundedSam(tiny_models), settings).predict(_image(), taxonomy)
    b = Pipeline(GroundedSam(tiny_models), settings).predict(_image(), taxonomy)
    assert a.segments and a.id_map.any()
    assert any(not s.is_thing for s in a.segments)
    assert np.array_equal(a.id_map, b.id_map)
    assert a.segments == b.segments


def test_large_image_is_processed_downscaled_and_returned_full_size(tiny_models: object) -> None:
    settings = OPEN.model_copy(update={"max_image_side": 64})
    small = Pipeline(GroundedSam(tiny_models), settings)
    taxonomy = build_taxonomy(CATEGORIES, {}, settings)
    embedded: list[tuple[int, int]] = []
    real_embed = small.backend.segmenter.embed_batch

    def spy(images: list[Image.Image]) -> object:
        embedded.extend(image.size for image in images)
        return real_embed(images)

    small.backend.segmenter.embed_batch = spy
    prediction = small.predict(_image(256, 128), taxonomy)
    assert embedded == [(64, 32)]  # the models saw the downscaled image
    _check_contract(prediction, (256, 128))


def test_sam_embedding_reuse_matches_a_full_forward(pipeline: Pipeline) -> None:
    image = _image()
    embedding = pipeline.backend.segmenter.embed(image)
    boxes = np.array([[5, 5, 40, 30], [50, 10, 90, 60]], dtype=np.float32)
    reused = pipeline.backend.segmenter.segment_boxes(embedding, boxes)
    processor = pipeline.backend.models.sam_processor
    inputs = processor(images=image, input_boxes=[boxes.tolist()], return_tensors="pt")
    with torch.inference_mode():
        full = pipeline.backend.models.sam(**inputs, multimask_output=False)
    masks = processor.image_processor.post_process_masks(
        full.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"]
    )[0][:, 0]
    assert all(m.any() and not m.all() for m in reused.masks)
    assert np.array_equal(reused.masks, masks.numpy())
    np.testing.assert_allclose(reused.scores, full.iou_scores[0, :, 0].numpy(), atol=1e-5)


def test_clipseg_shared_vision_pass_matches_the_model_forward(pipeline: Pipeline) -> None:
    taxonomy = build_taxonomy(
        [Category(1, "sky"), Category(2, "road")],
        {},
        OPEN,
    )
    image = _image()
    probs = pipeline.backend.stuff.probabilities(image, taxonomy.stuff)
    assert probs.shape[0] == 2 and probs.size > 2
    processor = pipeline.backend.models.clipseg_processor
    inputs = processor(
        text=["sky", "road"], images=[image, image], padding=True, return_tensors="pt"
    )
    with torch.inference_mode():
        logits = pipeline.backend.models.clipseg(**inputs).logits
    np.testing.assert_allclose(probs, logits.sigmoid().numpy(), atol=1e-5)


def test_many_thing_prompts_split_by_the_token_limit(pipeline: Pipeline) -> None:
    words = ["person", "car", "dog", "cat", "tree", "road", "sky", "grass", "building"]
    cats = [Category(i + 1, f"{w} {w}{i}", True) for i, w in enumerate(words * 10)]
    taxonomy = build_taxonomy(cats, {}, OPEN)
    detector = pipeline.backend.detector
    from prelabel.backends.grounded_sam.detect import build_prompt_chunks

    chunks = build_prompt_chunks(taxonomy.things, detector.count_tokens, detector.max_tokens)
    assert len(chunks) > 1
    assert all(detector.count_tokens(c.text) <= detector.max_tokens for c in chunks)
    found = detector.detect(
        _image(), taxonomy.things, nms_iou=0.5, cross_category_iou=0.9, max_detections=50
    )
    assert set(found.category_ids.tolist()) <= {c.id for c in cats}
    assert len(found) > 0


def test_a_batch_of_same_size_images_predicts_what_single_images_predict(
    pipeline: Pipeline,
) -> None:
    taxonomy = build_taxonomy(CATEGORIES, {}, OPEN)
    images = [_image(96, 64, seed=seed) for seed in (1, 2, 3)]
    passes = pipeline.backend.segmenter.encoder_passes
    batch = pipeline.predict_batch(images, taxonomy)
    assert pipeline.backend.segmenter.encoder_passes - passes == 3  # one pass per image, one call
    for image, batched in zip(images, batch, strict=True):
        single = pipeline.predict(image, taxonomy)
        assert single.segments and single.id_map.any()
        assert (batched.id_map == single.id_map).mean() > 0.999
        assert [s.category_id for s in batched.segments] == [s.category_id for s in single.segments]


def test_a_batch_of_mixed_sizes_keeps_each_image_size(pipeline: Pipeline) -> None:
    """Grounding DINO pads a mixed batch, which moves random-weight boxes a little, so only
    the contract is compared; SAM pads every image to 1024 anyway, so its embeddings match."""
    taxonomy = build_taxonomy(CATEGORIES, {}, OPEN)
    images = [_image(96, 64, seed=1), _image(64, 80, seed=2), _image(50, 50, seed=3)]
    for image, batched in zip(images, pipeline.predict_batch(images, taxonomy), strict=True):
        _check_contract(batched, image.size)
    embeddings = pipeline.backend.segmenter.embed_batch(images)
    for image, embedding in zip(images, embeddings, strict=True):
        single = pipeline.backend.segmenter.embed(image)
        assert embedding.original_size == single.original_size
        np.testing.assert_allclose(
            embedding.embeddings.numpy(), single.embeddings.numpy(), rtol=1e-4, atol=1e-5
        )


def test_an_mm_grounding_dino_checkpoint_detects_through_the_seam(tiny_models_dir: Path) -> None:
    """``models.grounding_dino`` may name an MM Grounding DINO (or LLMDet) checkpoint: it loads
    through AutoModelForZeroShotObjectDetection with the Grounding DINO processor, and the
    pipeline finds things with it, end to end from ``load_backend``."""
    models = ModelSettings(
        device="cpu",
        grounding_dino=str(tiny_models_dir / "mm_grounding_dino"),
        sam=str(tiny_models_dir / "sam"),
        clipseg=str(tiny_models_dir / "clipseg"),
    )
    settings = Settings(models=models, pipeline=OPEN)
    backend = load_backend(settings)
    assert isinstance(backend, GroundedSam)
    detector = backend.models.grounding_dino
    assert type(detector).__name__ == "MMGroundingDinoForObjectDetection"
    taxonomy = build_taxonomy(CATEGORIES, {}, OPEN, reader=option_reader(settings))
    prediction = Pipeline(backend, OPEN).predict(_image(), taxonomy)
    _check_contract(prediction, (96, 64))
    things = [s for s in prediction.segments if s.is_thing]
    assert things and {s.category_id for s in things} <= {1, 2}


def test_thing_candidates_are_tight_crops_and_stuff_reads_them_like_full_masks(
    tiny_models: object,
) -> None:
    # Few things and no erosion leave stuff its pixels (as in the first test).
    settings = OPEN.model_copy(update={"max_detections": 2, "shrink_kernel": 0})
    pipeline = Pipeline(GroundedSam(tiny_models), settings)
    image = _image()
    taxonomy = pipeline.fit(build_taxonomy(CATEGORIES, {}, settings))
    (session,) = pipeline.backend.open_batch([image], taxonomy, settings, pipeline.clock(None))
    things = session.things()
    found = pipeline.backend.detect_batch([image], taxonomy.things, settings)[0]
    sam_masks = pipeline.backend.segmenter.segment_boxes(session.embedding, found.boxes).masks

    assert things and all(t.frame == (64, 96) for t in things)
    np.testing.assert_array_equal(np.stack([t.full_mask() for t in things]), sam_masks)
    assert all(t.cropped().mask.shape == t.mask.shape for t in things)  # tight windows
    full_size = [replace(t, mask=t.full_mask(), origin=(0, 0), frame=None) for t in things]
    from_crops, from_full = session.stuff(things), session.stuff(full_size)
    assert from_crops and len(from_crops) == len(from_full)
    for a, b in zip(from_crops, from_full, strict=True):
        assert (a.category_id, a.score) == (b.category_id, b.score)
        np.testing.assert_array_equal(a.mask, b.mask)
    without = session.stuff([])  # the things are read: without them stuff differs
    assert [c.mask.sum() for c in without] != [c.mask.sum() for c in from_crops]
