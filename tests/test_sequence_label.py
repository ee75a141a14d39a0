"""The sequence label format: per-frame encodings -> one label, and the checks before a write."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from segments.typing import ImageSequenceSegmentationLabelAttributes

from prelabel.formats.label import encode_label
from prelabel.formats.sequence_label import (
    FrameLabel,
    check_sequence_label,
    empty_frame_png,
    frame_label,
    label_bitmap_urls,
    label_object_count,
    pooled_score,
    sequence_label_attributes,
    sequence_label_model,
    sequence_score,
)
from prelabel.panoptic import PanopticPrediction, Segment
from prelabel.run.job import UploadedFrame, sequence_label_score


def _prediction(ids: dict[int, int], score: float = 0.5) -> PanopticPrediction:
    id_map = np.zeros((4, 6), np.uint32)
    segments = []
    for column, (track_id, category_id) in enumerate(ids.items()):
        id_map[:, column] = track_id
        segments.append(Segment(track_id, category_id, True, score, 4, (column, 0, 1, 4)))
    return PanopticPrediction(id_map, tuple(segments))


def _frames() -> list[FrameLabel]:
    return [
        frame_label(encode_label(_prediction({7: 1, 9: 2})), "http://a/0.png", 100),
        frame_label(encode_label(_prediction({})), "http://a/empty.png", 133),
        frame_label(encode_label(_prediction({9: 2})), "http://a/2.png", None),
    ]


def test_the_label_has_one_frame_per_prediction_with_track_ids_and_keyframes() -> None:
    attributes = sequence_label_attributes(_frames())

    assert attributes == {
        "format_version": "0.1",
        "frames": [
            {
                "format_version": "0.1",
                "annotations": [
                    {"id": 7, "track_id": 7, "category_id": 1, "is_keyframe": True},
                    {"id": 9, "track_id": 9, "category_id": 2, "is_keyframe": True},
                ],
                "segmentation_bitmap": {"url": "http://a/0.png"},
                "timestamp": 100,
            },
            {
                "format_version": "0.1",
                "annotations": [],
                "segmentation_bitmap": {"url": "http://a/empty.png"},
                "timestamp": 133,
            },
            {
                "format_version": "0.1",
                "annotations": [{"id": 9, "track_id": 9, "category_id": 2, "is_keyframe": True}],
                "segmentation_bitmap": {"url": "http://a/2.png"},
            },
        ],
    }
    check_sequence_label(attributes, 3)
    model = sequence_label_model(attributes)
    assert isinstance(model, ImageSequenceSegmentationLabelAttributes)
    assert model.model_dump(exclude_unset=True) == attributes
    assert label_bitmap_urls(attributes) == (
        "http://a/0.png",
        "http://a/empty.png",
        "http://a/2.png",
    )


def test_frame_labels_survive_json() -> None:
    for frame in _frames():
        assert FrameLabel.from_dict(json.loads(json.dumps(frame.as_dict()))) == frame


def test_the_empty_bitmap_is_what_encoding_an_empty_frame_gives() -> None:
    assert empty_frame_png((6, 4)) == encode_label(_prediction({})).png
    assert empty_frame_png((6, 4)) != empty_frame_png((4, 6))


def test_label_bitmap_urls_of_an_image_label_and_of_none() -> None:
    assert label_bitmap_urls({"annotations": [], "segmentation_bitmap": {"url": "u"}}) == ("u",)
    assert label_bitmap_urls(None) == ()


def test_sequence_score_pools_areas_over_frames() -> None:
    predictions = [_prediction({1: 1}, score=1.0), _prediction({1: 1, 2: 1}, score=0.25)]

    assert sequence_score(predictions) == pytest.approx((4 * 1.0 + 8 * 0.25) / 12)
    assert sequence_score([_prediction({})]) == 0.0


def test_an_empty_frame_does_not_pull_a_sequence_score_down() -> None:
    predictions = [_prediction({1: 1}, score=0.8), _prediction({}), _prediction({1: 1}, 0.8)]
    encoded = [encode_label(p) for p in predictions]

    assert pooled_score((e.score, e.area) for e in encoded) == pytest.approx(0.8)
    assert sequence_score(predictions) == pytest.approx(0.8)  # a plain mean gave 0.53


def test_a_resumed_sequence_scores_as_a_fresh_one() -> None:
    """The frames a killed run uploaded come back from the state file (JSON) with what the
    score needs, so the label written by the rerun has the score a fresh run gives."""
    predictions = [_prediction({1: 1, 2: 1}, 0.9), _prediction({}), _prediction({1: 1}, 0.3)]
    fresh = [
        UploadedFrame(frame_label(e, f"http://a/{i}.png", i), e.score, f"img{i}", e.area)
        for i, e in enumerate(encode_label(p) for p in predictions)
    ]
    resumed = [UploadedFrame.from_dict(json.loads(json.dumps(f.as_dict()))) for f in fresh]

    assert resumed == fresh
    assert sequence_label_score(resumed) == pytest.approx(sequence_score(predictions))
    assert sequence_label_score(resumed) == pytest.approx((8 * 0.9 + 4 * 0.3) / 12)


def _broken(change: str) -> dict[str, Any]:
    attributes = sequence_label_attributes(_frames())
    frames = attributes["frames"]
    if change == "repeat":
        frames[0]["annotations"].append(dict(frames[0]["annotations"][0]))
    elif change == "track":
        frames[2]["annotations"][0]["track_id"] = 3
    elif change == "category":
        frames[2]["annotations"][0]["category_id"] = 1
    elif change == "bitmap":
        del frames[0]["segmentation_bitmap"]
    elif change == "frames":
        del attributes["frames"]
    return attributes


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("repeat", r"frame 0: ids \[7\] appear more than once"),
        ("track", "frame 2: annotation id 9 has track_id 3"),
        ("category", r"tracks with more than one category: \{9: \[1, 2\]\}"),
        ("bitmap", "frame 0: has annotations but no segmentation bitmap URL"),
        ("frames", "needs a 'frames' list"),
    ],
)
def test_check_sequence_label_refuses_broken_labels(change: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_sequence_label(_broken(change), 3)


def test_check_sequence_label_refuses_another_frame_count() -> None:
    with pytest.raises(ValueError, match="the label has 3 frames but the sample has 4"):
        check_sequence_label(sequence_label_attributes(_frames()), 4)


def test_label_object_count_counts_annotations_or_tracks_over_frames() -> None:
    image = {"annotations": [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 3}]}
    frames = {
        "frames": [
            {"annotations": [{"id": 1, "track_id": 1}, {"id": 4, "track_id": 4}]},
            {"annotations": []},
            {"annotations": [{"id": 4, "track_id": 4}, {"id": 7, "track_id": 7}]},
        ]
    }
    assert label_object_count(image) == 2
    assert label_object_count(frames) == 3  # tracks 1, 4 and 7
