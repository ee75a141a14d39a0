"""Panoptic maps -> box and polygon labels (shared/segments-api.md 12.2), with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from prelabel.config import VectorSettings
from prelabel.formats.vector_label import (
    encode_vector_label,
    mask_polygons,
    score_categories,
    vector_frame,
    vector_label_key,
    vector_sequence_attributes,
)
from prelabel.panoptic import PanopticPrediction, Segment

WIDTH, HEIGHT = 80, 60


def prediction(
    id_map: np.ndarray,
    kinds: dict[int, tuple[int, bool, float]],
    boxes: dict[int, tuple[float, float, float, float]] | None = None,
) -> PanopticPrediction:
    """A prediction whose segments are measured from ``id_map``; ``kinds`` gives each id's
    (category, is_thing, score)."""
    segments = []
    for seg_id, (category, is_thing, score) in sorted(kinds.items()):
        ys, xs = np.nonzero(id_map == seg_id)
        bbox = (
            int(xs.min()),
            int(ys.min()),
            int(xs.max() - xs.min() + 1),
            int(ys.max() - ys.min() + 1),
        )
        box = (boxes or {}).get(seg_id)
        segments.append(Segment(seg_id, category, is_thing, score, len(xs), bbox, box))
    return PanopticPrediction(id_map=id_map.astype(np.uint32), segments=tuple(segments))


def scene() -> PanopticPrediction:
    """Two rectangles (things 1 and 2, categories 1 and 2) on a stuff band (id 3, category 5)."""
    id_map = np.zeros((HEIGHT, WIDTH), np.uint32)
    id_map[40:, :] = 3  # stuff: the bottom band, full width
    id_map[5:25, 10:30] = 1  # thing 1: x 10..29, y 5..24
    id_map[30:50, 50:75] = 2  # thing 2: x 50..74, y 30..49, over the band
    return prediction(id_map, {1: (1, True, 0.9), 2: (2, True, 0.6), 3: (5, False, 0.8)})


def corners(points: list[list[float]]) -> tuple[float, float, float, float]:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def assert_near_rectangle(points: list[list[float]], x0: int, y0: int, x1: int, y1: int) -> None:
    """Every vertex within a pixel of the rectangle's outline, and the outline's extent too."""
    assert len(points) >= 3
    assert points[0] != points[-1], "a polygon's first point is not repeated"
    got = corners(points)
    assert got == pytest.approx((x0, y0, x1, y1), abs=1.0)
    for x, y in points:
        on_vertical = min(abs(x - x0), abs(x - x1)) <= 1.0 and y0 - 1 <= y <= y1 + 1
        on_horizontal = min(abs(y - y0), abs(y - y1)) <= 1.0 and x0 - 1 <= x <= x1 + 1
        assert on_vertical or on_horizontal, (x, y)


def test_boxes_are_the_things_tight_boxes_on_pixel_edges() -> None:
    label = encode_vector_label(scene(), "bbox", VectorSettings())
    annotations = label.attributes["annotations"]
    assert label.attributes["format_version"] == "0.1"
    assert [a["type"] for a in annotations] == ["bbox", "bbox"]  # stuff gets no box
    assert [a["id"] for a in annotations] == [1, 2]
    assert [a["category_id"] for a in annotations] == [1, 2]
    assert annotations[0]["points"] == [[10.0, 5.0], [30.0, 25.0]]
    assert annotations[1]["points"] == [[50.0, 30.0], [75.0, 50.0]]
    assert "attributes" not in annotations[0]
    assert label.objects == 2


def test_polygons_follow_the_rectangles_within_a_pixel_and_stuff_is_configurable() -> None:
    label = encode_vector_label(scene(), "polygon", VectorSettings())
    annotations = label.attributes["annotations"]
    assert [(a["category_id"], a["type"]) for a in annotations] == [
        (1, "polygon"),
        (2, "polygon"),
        (5, "polygon"),
    ]
    assert_near_rectangle(annotations[0]["points"], 10, 5, 30, 25)
    assert_near_rectangle(annotations[1]["points"], 50, 30, 75, 50)
    # The band minus thing 2's corner is an L-shape: more than 4 vertices, within the band.
    band = annotations[2]["points"]
    assert corners(band) == pytest.approx((0, 40, WIDTH, HEIGHT), abs=1.0)
    assert len(band) >= 6
    skipped = encode_vector_label(scene(), "polygon", VectorSettings(stuff="skip"))
    assert [a["category_id"] for a in skipped.attributes["annotations"]] == [1, 2]


def test_the_label_score_is_area_weighted_as_for_bitmaps() -> None:
    pred = scene()
    label = encode_vector_label(pred, "polygon", VectorSettings())
    areas = {s.id: s.area for s in pred.segments}
    expected = (areas[1] * 0.9 + areas[2] * 0.6 + areas[3] * 0.8) / sum(areas.values())
    assert label.score == pytest.approx(expected)


def test_a_thing_in_two_parts_gets_two_polygons_and_slivers_are_dropped() -> None:
    id_map = np.zeros((HEIGHT, WIDTH), np.uint32)
    id_map[5:15, 5:15] = 1  # 100 px
    id_map[30:40, 40:60] = 1  # 200 px: the larger part comes first
    id_map[50:52, 70:72] = 1  # 4 px: under min_area
    pred = prediction(id_map, {1: (3, True, 0.7)})
    annotations = encode_vector_label(pred, "polygon", VectorSettings(min_area=16)).attributes[
        "annotations"
    ]
    assert [a["id"] for a in annotations] == [1, 2]
    assert {a["category_id"] for a in annotations} == {3}
    assert_near_rectangle(annotations[0]["points"], 40, 30, 60, 40)
    assert_near_rectangle(annotations[1]["points"], 5, 5, 15, 15)
    kept_sliver = encode_vector_label(pred, "polygon", VectorSettings(min_area=4))
    assert len(kept_sliver.attributes["annotations"]) == 3


def test_holes_are_filled_since_a_polygon_is_one_ring() -> None:
    mask = np.zeros((40, 40), bool)
    mask[5:35, 5:35] = True
    mask[15:25, 15:25] = False  # a hole
    (ring,) = mask_polygons(mask, min_area=1, tolerance=1.0)
    assert_near_rectangle(ring, 5, 5, 35, 35)


def test_simplification_keeps_tens_of_points_not_one_per_boundary_pixel() -> None:
    yy, xx = np.mgrid[:400, :400]
    disc = (yy - 200) ** 2 + (xx - 200) ** 2 < 180**2
    (raw,) = mask_polygons(disc, min_area=1, tolerance=0)
    (ring,) = mask_polygons(disc, min_area=1, tolerance=1.0)
    assert len(raw) > 1000
    assert 10 <= len(ring) <= 100
    xs, ys = np.array(ring).T
    radius = np.hypot(xs - 200, ys - 200)
    assert np.all(np.abs(radius - 180) <= 1.5)


def test_an_offset_window_places_points_in_image_pixels() -> None:
    mask = np.ones((4, 6), bool)
    (ring,) = mask_polygons(mask, min_area=1, tolerance=0.5, offset=(100, 200))
    assert_near_rectangle(ring, 100, 200, 106, 204)


def test_detector_boxes_when_asked_normalised_and_clamped() -> None:
    id_map = np.zeros((HEIGHT, WIDTH), np.uint32)
    id_map[5:25, 10:30] = 1
    id_map[30:50, 50:75] = 2
    # Box 1 reversed (x1 < x0) and box 2 reaching outside the image.
    boxes = {1: (31.5, 26.0, 9.5, 4.0), 2: (48.0, 29.0, 90.0, 70.0)}
    pred = prediction(id_map, {1: (1, True, 0.9), 2: (2, True, 0.6)}, boxes)
    detector = encode_vector_label(pred, "bbox", VectorSettings(box_source="detector"))
    points = [a["points"] for a in detector.attributes["annotations"]]
    assert points == [[[9.5, 4.0], [31.5, 26.0]], [[48.0, 29.0], [80.0, 60.0]]]
    mask = encode_vector_label(pred, "bbox", VectorSettings(box_source="mask"))
    assert mask.attributes["annotations"][0]["points"] == [[10.0, 5.0], [30.0, 25.0]]


def test_the_score_goes_to_the_named_number_attribute_of_categories_that_declare_it() -> None:
    number = [{"name": "confidence", "input_type": "number"}]
    text = [{"name": "confidence", "input_type": "text"}]
    task_attributes = {
        "categories": [
            {"id": 1, "name": "car", "attributes": number},
            {"id": 2, "name": "person", "attributes": text},
            {"id": 5, "name": "road"},
        ]
    }
    scored = score_categories(task_attributes, "confidence")
    assert scored == {1}
    assert score_categories(task_attributes, None) == frozenset()
    settings = VectorSettings(score_attribute="confidence")
    annotations = encode_vector_label(
        scene(), "bbox", settings, scored_categories=scored
    ).attributes["annotations"]
    assert annotations[0]["attributes"] == {"confidence": 0.9}
    assert "attributes" not in annotations[1]


def test_an_empty_prediction_is_a_valid_empty_label() -> None:
    pred = PanopticPrediction(id_map=np.zeros((4, 4), np.uint32), segments=())
    label = encode_vector_label(pred, "polygon", VectorSettings())
    assert label.attributes == {"format_version": "0.1", "annotations": []}
    assert label.score == 0.0


def test_the_content_key_tells_labels_apart_and_ignores_read_back_extras() -> None:
    label = encode_vector_label(scene(), "bbox", VectorSettings()).attributes
    read_back = {
        "format_version": "0.1",
        "image_attributes": None,
        "annotations": [{**a, "attributes": None, "track_id": None} for a in label["annotations"]],
    }
    assert vector_label_key(read_back) == vector_label_key(label)
    other = encode_vector_label(scene(), "polygon", VectorSettings()).attributes
    assert vector_label_key(other) != vector_label_key(label)
    bitmap = {"annotations": [{"id": 1, "category_id": 1}], "segmentation_bitmap": {"url": "u"}}
    assert vector_label_key(bitmap) is None


def test_a_sequence_frame_keeps_track_ids_and_one_shape_per_track() -> None:
    id_map = np.zeros((HEIGHT, WIDTH), np.uint32)
    id_map[5:15, 5:15] = 7  # track 7 in two parts: only the larger one is kept
    id_map[30:40, 40:60] = 7
    id_map[45:55, 10:20] = 9
    pred = prediction(id_map, {7: (1, True, 0.8), 9: (2, True, 0.5)})
    frame = vector_frame(pred, "polygon", VectorSettings(), timestamp=1234)
    assert frame["timestamp"] == 1234 and frame["format_version"] == "0.1"
    annotations = frame["annotations"]
    assert [(a["id"], a["track_id"], a["is_keyframe"]) for a in annotations] == [
        (7, 7, True),
        (9, 9, True),
    ]
    assert_near_rectangle(annotations[0]["points"], 40, 30, 60, 40)
    boxes = vector_frame(pred, "bbox", VectorSettings())
    assert "timestamp" not in boxes
    assert boxes["annotations"][0]["points"] == [[5.0, 5.0], [60.0, 40.0]]
    label = vector_sequence_attributes([frame, boxes])
    assert label["format_version"] == "0.2" and len(label["frames"]) == 2
