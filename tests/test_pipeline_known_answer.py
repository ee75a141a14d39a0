"""A known answer end to end, without models' randomness.

The three models are replaced by the deterministic stand-ins of ``tests/fixtures/standins.py``
(boxes around coloured rectangles, SAM masks that follow the colours, a CLIPSeg map high where
the image is blue for "sky" and grey for "road"); everything else is the real pipeline code with
the real processors. The image is drawn from a layout, so the test knows the category and the
instance of every pixel:

- ``test_detector_boxes_surround_the_drawn_rectangles``: :class:`ThingDetector` scales the
  model's boxes to each image (padding of a mixed batch included), maps queries to categories
  through the token spans (a box on the ``.`` separator is no category) and applies the gates.
- ``test_every_pixel_gets_its_category_and_instance``: the whole of ``Pipeline.predict_batch``:
  thing masks paired with their own detection's category, stuff point prompts placed in the stuff
  region (x and y not swapped, scaled to the image), things over stuff, one segment per
  rectangle and per stuff category.
- ``test_a_downscaled_image_comes_back_at_full_size``: the same through ``max_image_side``.

The stuff branch is checked for every ``pipeline.stuff_method`` the settings offer (``seed``, the
default, and ``regions``). The scene is made to hold under both:
the stuff bands are tall enough to survive the seed's 20-pixel erosion, and the stand-in SAM
answers a set of points with the colour patch most of them fall in, however many there are.
"""

from __future__ import annotations

import typing

import numpy as np
import pytest
import torch
from scipy import ndimage

from prelabel.backends.grounded_sam.backend import GroundedSam
from prelabel.backends.grounded_sam.loading import LoadedModels
from prelabel.config import PipelineSettings
from prelabel.panoptic import PanopticPrediction
from prelabel.pipeline.pipeline import Pipeline
from prelabel.taxonomy import Category, Taxonomy, build_taxonomy
from tests.fixtures.models import category_map
from tests.fixtures.standins import (
    BlueMeansSky,
    BoxesAroundColours,
    FloodFillSam,
    Scene,
    draw_scene,
)

pytestmark = pytest.mark.slow

CATEGORIES = [
    Category(1, "person", True),
    Category(2, "car", True),
    Category(3, "sky"),
    Category(4, "road"),
]
CATEGORY_IDS = {c.name: c.id for c in CATEGORIES}

#: Sky on top, road at the bottom, background between; two people (one reaching into the sky,
#: one in the background band) and a car standing on the road.
SCENE = Scene(
    bands=(("sky", 0.0, 0.4), ("road", 0.65, 1.0)),
    things=(
        ("person", 0.12, 0.25, 0.28, 0.6),
        ("person", 0.4, 0.45, 0.5, 0.62),
        ("car", 0.6, 0.55, 0.88, 0.85),
    ),
)

#: ``(width, height)``: batch size 1 in both orientations, and a mixed batch of 3. The longest
#: side is 256, so that a pixel is exactly one cell of SAM's 256 x 256 low-resolution masks and the
#: stand-in's answers are exact to the pixel.
BATCHES = {
    "landscape": [(256, 192)],
    "portrait": [(192, 256)],
    "batch of 3": [(256, 192), (192, 256), (256, 128)],
}


def _stuff_methods() -> list[str | None]:
    """The values of ``PipelineSettings.stuff_method`` when the setting exists, else ``[None]``."""
    field = PipelineSettings.model_fields.get("stuff_method")
    if field is None:
        return [None]
    return list(typing.get_args(field.annotation)) or [field.default]


def _settings(stuff_method: str | None = None, **changes: object) -> PipelineSettings:
    if stuff_method is not None:
        changes["stuff_method"] = stuff_method
    return PipelineSettings(**changes)


@pytest.fixture(scope="module")
def standin_models(tiny_models: LoadedModels) -> LoadedModels:
    """The stand-ins, with the real processors of the tiny models."""
    return LoadedModels(
        grounding_dino=BoxesAroundColours(
            tiny_models.grounding_dino_processor, {"person": "person", "car": "car"}
        ),
        grounding_dino_processor=tiny_models.grounding_dino_processor,
        sam=FloodFillSam(tiny_models.sam_processor),
        sam_processor=tiny_models.sam_processor,
        clipseg=BlueMeansSky(tiny_models.clipseg_processor, {"sky": "sky", "road": "road"}),
        clipseg_processor=tiny_models.clipseg_processor,
        device=torch.device("cpu"),
        dtypes=dict.fromkeys(("grounding_dino", "sam", "clipseg"), torch.float32),
        is_tiny=False,
    )


def _taxonomy(settings: PipelineSettings) -> Taxonomy:
    return build_taxonomy(CATEGORIES, {}, settings)


@pytest.mark.parametrize("batch", list(BATCHES))
def test_detector_boxes_surround_the_drawn_rectangles(
    standin_models: LoadedModels, batch: str
) -> None:
    settings = _settings()
    pipeline = Pipeline(GroundedSam(standin_models), settings)
    images = [draw_scene(SCENE, size) for size in BATCHES[batch]]
    found = pipeline.backend.detector.detect_batch(
        images,
        _taxonomy(settings).things,
        nms_iou=settings.nms_iou,
        cross_category_iou=settings.cross_category_iou,
        max_detections=settings.max_detections,
    )
    for image, detections in zip(images, found, strict=True):
        rectangles = SCENE.rectangles(image.size)
        # Only the rectangles: the separator's box and the one under the gates are dropped.
        assert len(detections) == len(rectangles) > 0
        assert detections.category_ids.tolist() == [CATEGORY_IDS[r[0]] for r in rectangles]
        want = np.array([r[1:] for r in rectangles], dtype=np.float32)
        # The stand-in boxes patches of Grounding DINO's resized image: within a pixel.
        np.testing.assert_allclose(detections.boxes, want, rtol=0, atol=1.0)
        assert np.all(np.diff(detections.scores) < 0)


@pytest.mark.parametrize("stuff_method", _stuff_methods())
@pytest.mark.parametrize("batch", list(BATCHES))
def test_every_pixel_gets_its_category_and_instance(
    standin_models: LoadedModels, batch: str, stuff_method: str | None
) -> None:
    settings = _settings(stuff_method)
    images = [draw_scene(SCENE, size) for size in BATCHES[batch]]
    predictions = Pipeline(GroundedSam(standin_models), settings).predict_batch(
        images, _taxonomy(settings)
    )
    assert len(predictions) == len(images)
    for image, prediction in zip(images, predictions, strict=True):
        assert prediction.size == image.size
        _assert_scene(prediction, image.size)


def _assert_scene(prediction: PanopticPrediction, size: tuple[int, int]) -> None:
    categories, instances = SCENE.expected(size, CATEGORY_IDS)
    assert set(np.unique(categories).tolist()) == {0, 1, 2, 3, 4}
    got = category_map(prediction)
    wrong = got != categories
    assert not wrong.any(), (
        f"{wrong.sum()} pixels have the wrong category, first at {_first(wrong)}"
    )
    ids = prediction.id_map
    segments = {s.id: s for s in prediction.segments}
    owners = [_only_id(ids[instances == index]) for index in range(instances.max() + 1)]
    assert len(set(owners)) == len(owners), "each rectangle is its own instance"
    assert all(segments[i].is_thing for i in owners)
    stuff = [_only_id(ids[categories == CATEGORY_IDS[name]]) for name in ("sky", "road")]
    assert not any(segments[i].is_thing for i in stuff)
    assert set(segments) == {*owners, *stuff}, "no other segment"


def _only_id(ids: np.ndarray) -> int:
    """The one segment id of a region the scene says is one segment."""
    found = np.unique(ids).tolist()
    assert len(found) == 1, f"one segment expected, got ids {found}"
    return int(found[0])


def _first(mask: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(mask)
    return int(cols[0]), int(rows[0])


@pytest.mark.parametrize("stuff_method", _stuff_methods())
def test_a_downscaled_image_comes_back_at_full_size(
    standin_models: LoadedModels, stuff_method: str | None
) -> None:
    """Models see 256 x 192; the map comes back at 512 x 384, exact away from the edges."""
    settings = _settings(stuff_method, max_image_side=256)
    image = draw_scene(SCENE, (512, 384))
    prediction = Pipeline(GroundedSam(standin_models), settings).predict(image, _taxonomy(settings))
    assert prediction.size == (512, 384)
    categories, _ = SCENE.expected((512, 384), CATEGORY_IDS)
    got = category_map(prediction)
    # A pixel within 2 px of a colour edge may go either way after the 2x resize.
    edge = ndimage.maximum_filter(categories, 5) != ndimage.minimum_filter(categories, 5)
    assert edge.mean() < 0.2
    assert np.array_equal(got[~edge], categories[~edge])


def test_each_thing_keeps_its_detector_box_at_the_output_size(
    standin_models: LoadedModels,
) -> None:
    """Box datasets may write the detector's box (``vector.box_source: detector``): it is
    scaled with the map from the 256 x 192 the models saw to the 512 x 384 image."""
    settings = _settings(max_image_side=256)
    size = (512, 384)
    prediction = Pipeline(GroundedSam(standin_models), settings).predict(
        draw_scene(SCENE, size), _taxonomy(settings)
    )
    things = [s for s in prediction.segments if s.is_thing]
    assert len(things) == len(SCENE.things)
    got = sorted(s.box for s in things if s.box is not None)
    want = sorted(tuple(float(v) for v in r[1:]) for r in SCENE.rectangles(size))
    # Within a pixel of the models' 256 x 192 image: two pixels of the full-size one.
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=0, atol=2.0)
    assert all(s.box is None for s in prediction.segments if not s.is_thing)
