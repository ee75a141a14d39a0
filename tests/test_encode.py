"""Encoding a prediction as a Segments bitmap label: PNG round trip, annotations, checks, score."""

from __future__ import annotations

import io
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image
from segments.typing import ImageSegmentationLabelAttributes

from prelabel.formats.label import (
    EncodedLabel,
    check_prediction,
    encode_label,
    label_attributes,
    label_score,
)
from prelabel.panoptic import MAX_SEGMENT_ID, PanopticPrediction, Segment


def seg(seg_id: int, category_id: int = 1, *, score: float = 0.5, area: int = 1) -> Segment:
    return Segment(
        id=seg_id, category_id=category_id, is_thing=True, score=score, area=area, bbox=(0, 0, 1, 1)
    )


def prediction(id_map: npt.ArrayLike, *segments: Segment) -> PanopticPrediction:
    return PanopticPrediction(id_map=np.asarray(id_map, dtype=np.uint32), segments=segments)


def decode_rgba(png: bytes) -> npt.NDArray[np.int64]:
    """The documented decoding: id = R + 256*G + 65536*B, alpha ignored."""
    rgba = np.asarray(Image.open(io.BytesIO(png)))
    assert rgba.shape[2] == 4
    return (
        rgba[:, :, 0].astype(np.int64)
        + 256 * rgba[:, :, 1].astype(np.int64)
        + 65536 * rgba[:, :, 2].astype(np.int64)
    )


def decode_like_sdk(png: bytes) -> npt.NDArray[np.uint32]:
    """What ``segments.utils.load_label_bitmap_from_url`` does after its HTTP GET."""
    array = np.array(Image.open(io.BytesIO(png)))
    array[:, :, 3] = 0
    return array.view(np.uint32).squeeze(2)


BIG_IDS = prediction(
    [[0, 1, 255, 256], [70000, 70000, MAX_SEGMENT_ID, 0]],
    seg(1),
    seg(255),
    seg(256),
    seg(70000, area=2),
    seg(MAX_SEGMENT_ID),
)


@pytest.mark.parametrize("decode", [decode_rgba, decode_like_sdk])
def test_png_round_trip_keeps_every_id(decode: object) -> None:
    encoded = encode_label(BIG_IDS)

    decoded = decode(encoded.png)  # type: ignore[operator]

    np.testing.assert_array_equal(decoded, BIG_IDS.id_map)


def test_png_is_rgba_opaque_with_id_70000_as_documented() -> None:
    image = Image.open(io.BytesIO(encode_label(BIG_IDS).png))

    assert image.mode == "RGBA"
    assert image.size == BIG_IDS.size
    rgba = np.asarray(image)
    assert tuple(rgba[1, 0]) == (112, 17, 1, 255)
    assert (rgba[:, :, 3] == 255).all()


def test_non_contiguous_map_encodes_its_values() -> None:
    base = np.array([[1, 2, 3], [0, 2, 0]], dtype=np.uint32)
    transposed = prediction(base, seg(1), seg(2), seg(3)).id_map.T  # F-contiguous view
    pred = PanopticPrediction(id_map=transposed, segments=(seg(1), seg(2), seg(3)))

    np.testing.assert_array_equal(decode_rgba(encode_label(pred).png), transposed)


def test_annotations_sorted_by_id_with_category() -> None:
    pred = prediction([[3, 1, 2]], seg(3, 9), seg(1, 4), seg(2, 4))

    encoded = encode_label(pred)

    assert encoded.annotations == [
        {"id": 1, "category_id": 4},
        {"id": 2, "category_id": 4},
        {"id": 3, "category_id": 9},
    ]


def test_empty_prediction_encodes_to_all_zero_png_and_score_zero() -> None:
    encoded = encode_label(prediction(np.zeros((3, 5))))

    assert encoded == EncodedLabel(png=encoded.png, annotations=[], score=0.0)
    assert not decode_rgba(encoded.png).any()


CONTRACT_CASES = [
    pytest.param(prediction([[0, 1]], seg(1)), nullcontext(), id="valid"),
    pytest.param(
        PanopticPrediction(id_map=np.array([[0, 1]], dtype=np.int32), segments=(seg(1),)),
        pytest.raises(ValueError, match="2-D uint32 array, got 2-D int32"),
        id="int32-map",
    ),
    pytest.param(
        PanopticPrediction(id_map=np.ones((1, 2, 2), dtype=np.uint32), segments=(seg(1),)),
        pytest.raises(ValueError, match="got 3-D uint32"),
        id="3d-map",
    ),
    pytest.param(
        prediction(np.zeros((0, 3))),
        pytest.raises(ValueError, match="empty"),
        id="empty-map",
    ),
    pytest.param(
        prediction([[0, MAX_SEGMENT_ID + 1]], seg(1)),
        pytest.raises(ValueError, match=f"id {MAX_SEGMENT_ID + 1} > {MAX_SEGMENT_ID}"),
        id="map-id-beyond-24-bits",
    ),
    pytest.param(
        prediction([[0, 1]], seg(1), seg(MAX_SEGMENT_ID + 1)),
        pytest.raises(ValueError, match=rf"in 1\.\.{MAX_SEGMENT_ID}, got \[{MAX_SEGMENT_ID + 1}\]"),
        id="segment-id-beyond-24-bits",
    ),
    pytest.param(
        prediction([[0, 1]], seg(1), seg(0)),
        pytest.raises(ValueError, match=r"got \[0\]"),
        id="segment-id-zero",
    ),
    pytest.param(
        prediction([[2, 1]], seg(1), seg(2), seg(1)),
        pytest.raises(ValueError, match=r"not unique: \[1\]"),
        id="duplicate-segment-ids",
    ),
    pytest.param(
        prediction([[2, 1, 7]], seg(1), seg(2)),
        pytest.raises(ValueError, match=r"ids in the map without a segment: \[7\]"),
        id="map-id-without-segment",
    ),
    pytest.param(
        prediction([[0, 1]], seg(1), seg(5)),
        pytest.raises(ValueError, match=r"segments with no pixel in the map: \[5\]"),
        id="segment-without-pixels",
    ),
    pytest.param(
        prediction([[0, 2_000_000]], seg(1)),
        pytest.raises(ValueError, match=r"without a segment: \[2000000\].*no pixel.*\[1\]"),
        id="large-ids-use-the-sort-path",
    ),
]


@pytest.mark.parametrize(("pred", "expectation"), CONTRACT_CASES)
def test_contract_is_checked_before_encoding(
    pred: PanopticPrediction, expectation: AbstractContextManager[object]
) -> None:
    with expectation:
        check_prediction(pred)
    with expectation:
        encode_label(pred)


SCORE_CASES = [
    pytest.param([], 0.0, id="no-segments"),
    pytest.param([seg(1, score=0.8, area=10)], 0.8, id="one-segment"),
    pytest.param(
        [seg(1, score=0.9, area=10), seg(2, score=0.3, area=30)],
        (0.9 * 10 + 0.3 * 30) / 40,
        id="area-weighted-not-plain-mean",
    ),
    pytest.param(
        [seg(1, score=1.0, area=1), seg(2, score=0.0, area=999)], 0.001, id="large-unsure-dominates"
    ),
]


@pytest.mark.parametrize(("segments", "expected"), SCORE_CASES)
def test_label_score_is_area_weighted_mean(segments: list[Segment], expected: float) -> None:
    pred = PanopticPrediction(id_map=np.zeros((1, 1), dtype=np.uint32), segments=tuple(segments))

    assert label_score(pred) == pytest.approx(expected)


def test_encode_label_carries_the_label_score() -> None:
    pred = prediction([[1, 2, 2, 2]], seg(1, score=0.9, area=1), seg(2, score=0.5, area=3))

    assert encode_label(pred).score == pytest.approx((0.9 + 1.5) / 4)


def test_label_attributes_shape_and_copies_annotations() -> None:
    annotations = [{"id": 1, "category_id": 3}]

    attributes = label_attributes(annotations, "https://assets.example/label.png")
    attributes["annotations"][0]["category_id"] = 99

    assert attributes == {
        "format_version": "0.1",
        "annotations": [{"id": 1, "category_id": 99}],
        "segmentation_bitmap": {"url": "https://assets.example/label.png"},
    }
    assert annotations == [{"id": 1, "category_id": 3}]


def test_label_attributes_parse_as_sdk_model() -> None:
    encoded = encode_label(prediction([[1, 2]], seg(1, 4), seg(2, 5)))

    parsed = ImageSegmentationLabelAttributes.model_validate(
        label_attributes(encoded.annotations, "https://assets.example/label.png")
    )

    assert [(a.id, a.category_id) for a in parsed.annotations] == [(1, 4), (2, 5)]


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (64, 97)])
def test_png_pixels_equal_the_sdk_bitmap2file(shape: tuple[int, int]) -> None:
    from segments.utils import bitmap2file

    from prelabel.formats.bitmap import segmentation_png

    rng = np.random.default_rng(sum(shape))
    id_map = rng.integers(0, MAX_SEGMENT_ID + 1, size=shape).astype(np.uint32)
    id_map[: shape[0] // 2] = 70000  # long equal runs, what the Up filter compresses
    ours = np.asarray(Image.open(io.BytesIO(segmentation_png(id_map))))
    sdk = np.asarray(Image.open(bitmap2file(id_map)))
    assert ours.dtype == sdk.dtype == np.uint8
    assert np.array_equal(ours, sdk)
