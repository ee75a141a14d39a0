"""Known answers from transformers itself: the pipeline's thing branch against a reference that
processes images the documented way (``tests/fixtures/reference.py``), on the tiny models.

- ``test_thing_detector_matches_transformers``: :class:`ThingDetector` boxes (pixel coordinates
  of each image), scores, categories (token spans), gates and NMS.
- ``test_sam_box_and_point_masks_match_a_full_forward``: the shared SAM embedding, the prompt
  scaling of boxes and points, the choice among SAM's three point masks and the mask
  post-processing of :class:`SamSegmenter`.
- ``test_thing_branch_paints_every_pixel_like_the_reference``: ``Pipeline.predict_batch`` with
  things only: which detection's mask owns each pixel, and that detection's category (and so
  also SAM's box masks from a batched embedding, against a full forward per image).

Cases run on a landscape image, a portrait image and a batch of three images of other sizes
(landscape, portrait, square: Grounding DINO pads the batch, SAM embeds it in one call); prompts
are short, with a category of two synonyms, or long enough to be split into two Grounding DINO
queries.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from prelabel.backends.grounded_sam.backend import GroundedSam
from prelabel.backends.grounded_sam.detect import build_prompt_chunks
from prelabel.config import CategoryOptions, PipelineSettings
from prelabel.pipeline.pipeline import Pipeline
from prelabel.taxonomy import Category, Taxonomy, build_taxonomy
from tests.fixtures.images import noise_image
from tests.fixtures.models import category_map
from tests.fixtures.reference import (
    paint_by_score,
    reference_box_masks,
    reference_candidates,
    reference_nms,
    reference_point_masks,
    reference_thing_masks,
)

pytestmark = pytest.mark.slow

#: Image sizes ``(width, height)`` per scenario: batch sizes 1 and 3, both orientations.
SIZES = {
    "landscape": [(120, 72)],
    "portrait": [(72, 120)],
    "batch of 3": [(96, 64), (64, 100), (90, 90)],
}

#: Gates that drop some queries and keep others; "car" has a stricter text threshold of its own.
SETTINGS = PipelineSettings(box_threshold=0.5, text_threshold=0.25, min_area=0)
SHORT = [Category(1, "person", True), Category(2, "car", True), Category(3, "dog", True)]
SHORT_OPTIONS = {
    "car": CategoryOptions(text_threshold=0.9),
    "dog": CategoryOptions(prompt="dog . cat"),
}
_WORDS = ["person", "car", "dog", "cat", "tree", "road", "sky", "grass", "building"]
#: 90 categories, about 440 tokens: two queries for the tiny model's 256-token limit.
LONG = [Category(i + 1, f"{w} {w}{i}", True) for i, w in enumerate(_WORDS * 10)]

NMS_OFF = {"nms_iou": 1.0, "cross_category_iou": 1.0, "max_detections": 1000}
NMS_ON = {"nms_iou": 0.01, "cross_category_iou": 0.2, "max_detections": 12}


def _images(scenario: str) -> list[Image.Image]:
    return [noise_image(w, h, seed, high=255) for seed, (w, h) in enumerate(SIZES[scenario])]


def _taxonomy(prompt: str) -> Taxonomy:
    if prompt == "short":
        return build_taxonomy(SHORT, SHORT_OPTIONS, SETTINGS)
    return build_taxonomy(LONG, {}, SETTINGS)


def _query_texts(pipeline: Pipeline, taxonomy: Taxonomy) -> list[str]:
    detector = pipeline.backend.detector
    chunks = build_prompt_chunks(taxonomy.things, detector.count_tokens, detector.max_tokens)
    return [chunk.text for chunk in chunks]


@pytest.fixture(scope="module")
def pipeline(tiny_models: object) -> Pipeline:
    return Pipeline(GroundedSam(tiny_models), SETTINGS)


@pytest.mark.parametrize("prompt", ["short", "long"])
@pytest.mark.parametrize("scenario", list(SIZES))
def test_thing_detector_matches_transformers(
    pipeline: Pipeline, scenario: str, prompt: str
) -> None:
    images, taxonomy = _images(scenario), _taxonomy(prompt)
    texts = _query_texts(pipeline, taxonomy)
    assert len(texts) == (1 if prompt == "short" else 2)
    candidates = reference_candidates(pipeline.backend.models, images, taxonomy.things, texts)
    for nms in (NMS_OFF, NMS_ON):
        found = pipeline.backend.detector.detect_batch(images, taxonomy.things, **nms)
        assert len(found) == len(images)
        for image, got, gated in zip(images, found, candidates, strict=True):
            ref = reference_nms(gated, taxonomy.things, **nms)
            assert 0 < ref.gated < ref.queries, "the gates must keep some queries, drop others"
            if nms is NMS_ON:
                assert ref.after_nms < ref.gated, "NMS must have suppressed something"
            assert len(got) > 0
            assert got.category_ids.tolist() == ref.category_ids.tolist()
            np.testing.assert_allclose(got.scores, ref.scores, rtol=0, atol=1e-5)
            np.testing.assert_allclose(got.boxes, ref.boxes, rtol=0, atol=1e-3)
            assert (got.boxes[:, 2] <= image.width).all()
            assert (got.boxes[:, 3] <= image.height).all()
    if prompt == "short":
        # The synonym counts for its category; car passes its own, stricter gate sometimes.
        found_ids = {taxonomy.things[i].category_id for c in candidates for i in c.prompt_indices}
        assert found_ids == {1, 2, 3}


@pytest.mark.parametrize("scenario", ["landscape", "portrait"])
def test_sam_box_and_point_masks_match_a_full_forward(pipeline: Pipeline, scenario: str) -> None:
    images = _images(scenario)
    embeddings = pipeline.backend.segmenter.embed_batch(images)
    for image, embedding in zip(images, embeddings, strict=True):
        scale = np.array([image.width, image.height], dtype=np.float32)
        corners = np.array(
            [[[0.1, 0.1], [0.5, 0.45]], [[0.4, 0.3], [0.95, 0.9]], [[0.0, 0.0], [1.0, 1.0]]]
        )
        boxes = (corners * scale).reshape(-1, 4).astype(np.float32)
        got = pipeline.backend.segmenter.segment_boxes(embedding, boxes)
        masks, scores = reference_box_masks(pipeline.backend.models, image, boxes)
        _assert_distinct_nontrivial(masks)
        _assert_nearly_equal(got.masks, masks)
        np.testing.assert_allclose(got.scores, scores, rtol=0, atol=1e-4)

        fractions = np.array(
            [[[0.2, 0.3], [0.3, 0.8], [0.25, 0.5]], [[0.8, 0.1], [0.9, 0.2], [0.7, 0.6]]]
        )
        point_sets = (fractions * scale).astype(np.float32)
        got = pipeline.backend.segmenter.segment_points(embedding, list(point_sets))
        masks, scores = reference_point_masks(pipeline.backend.models, image, point_sets)
        best = scores.argmax(axis=1)  # the candidate SAM rates best, per prompt
        chosen = masks[np.arange(len(best)), best]
        _assert_distinct_nontrivial(chosen)
        _assert_nearly_equal(got.masks, chosen)
        np.testing.assert_allclose(got.scores, scores.max(axis=1), rtol=0, atol=1e-4)


def _assert_nearly_equal(got: np.ndarray, want: np.ndarray) -> None:
    """Equal but for a few pixels in a thousand.

    The pipeline scales prompts to SAM's frame in its own float32 arithmetic, SamProcessor in
    its own; the logits then differ by about 1e-6, which flips a pixel whose logit is that close
    to 0 (one in ~10^4 with the tiny model's noisy masks). A wrong box, point or size moves
    thousands.
    """
    assert got.shape == want.shape
    assert np.count_nonzero(got != want) <= max(2, want.size // 1000)


def _assert_distinct_nontrivial(masks: np.ndarray) -> None:
    """Each mask has pixels in and out, and no two are equal: a prompt in the wrong place or
    paired with another prompt's mask changes the answer."""
    assert all(m.any() and not m.all() for m in masks)
    assert len({m.tobytes() for m in masks}) == len(masks)


@pytest.mark.parametrize(
    ("scenario", "prompt"), [("landscape", "short"), ("portrait", "long"), ("batch of 3", "long")]
)
def test_thing_branch_paints_every_pixel_like_the_reference(
    pipeline: Pipeline, scenario: str, prompt: str
) -> None:
    images, taxonomy = _images(scenario), _taxonomy(prompt)
    limits = {
        "nms_iou": SETTINGS.nms_iou,
        "cross_category_iou": SETTINGS.cross_category_iou,
        "max_detections": SETTINGS.max_detections,
    }
    texts = _query_texts(pipeline, taxonomy)
    candidates = reference_candidates(pipeline.backend.models, images, taxonomy.things, texts)
    predictions = pipeline.predict_batch(images, taxonomy)
    for image, prediction, gated in zip(images, predictions, candidates, strict=True):
        ref = reference_nms(gated, taxonomy.things, **limits)
        masks = reference_thing_masks(pipeline.backend.models, image, ref)
        owner = paint_by_score(masks, ref.scores, (image.height, image.width))
        want = np.where(owner >= 0, ref.category_ids[owner], 0)
        assert len(np.unique(want[want > 0])) >= 2, "the reference must show two categories"
        _assert_nearly_equal(category_map(prediction), want)
        # Instances: each segment is one reference mask's pixels, a different mask for each.
        match = {
            seg.id: np.bincount(owner[prediction.id_map == seg.id] + 1).argmax() - 1
            for seg in prediction.segments
        }
        assert len(set(match.values())) == len(match) and -1 not in match.values()
        lookup = np.full(int(prediction.id_map.max()) + 1, -1)
        lookup[list(match)] = list(match.values())
        _assert_nearly_equal(lookup[prediction.id_map], owner)
        assert all(seg.is_thing for seg in prediction.segments)
