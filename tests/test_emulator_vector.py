"""``bboxes``, ``vector`` and ``image-vector-sequence`` datasets in the emulator, through the SDK.

Spec section 12.7: labels stored as JSON, ``label_type`` = the task type, ``track_id`` kept on
read; and, as emulator policy, a DRF 400 ``{"attributes": [...]}`` for a malformed vector label.
Shapes the SDK itself refuses to send (unknown ``type``, no ``track_id``) go over plain HTTP.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
import requests
from segments import SegmentsClient
from segments.exceptions import NetworkError, ValidationError
from segments.typing import (
    ImageFrame,
    ImageSequenceSampleAttributes,
    ImageSequenceVectorLabelAttributes,
    ImageVectorLabelAttributes,
)

from prelabel.emulator import Emulator
from tests.fixtures.emulator import (
    DEMO_CATEGORIES,
    EMULATOR_API_KEY,
    png_bytes,
    seed_dataset_via_sdk,
)

TASK_ATTRIBUTES = {"format_version": "0.1", "categories": [dict(c) for c in DEMO_CATEGORIES]}
BOX = {"id": 1, "category_id": 1, "type": "bbox", "points": [[1.0, 2.0], [10.5, 20.0]]}
TRIANGLE = {"id": 2, "category_id": 3, "type": "polygon", "points": [[0, 0], [8, 0], [8, 6]]}


def _label(*annotations: dict[str, Any]) -> dict[str, Any]:
    return {"format_version": "0.1", "annotations": list(annotations)}


def _image_sample(client: SegmentsClient, task_type: str) -> str:
    return seed_dataset_via_sdk(client, task_type, n_images=1, task_type=task_type).sample_uuids[0]


def _sequence_sample(client: SegmentsClient, n_frames: int = 2) -> str:
    client.add_dataset("vseq", task_type="image-vector-sequence", task_attributes=TASK_ATTRIBUTES)
    frames = [
        ImageFrame(
            image={"url": client.upload_asset(io.BytesIO(png_bytes(8, 6, seed=i)), "f.png").url}
        )
        for i in range(n_frames)
    ]
    sample = client.add_sample("jane/vseq", "clip", ImageSequenceSampleAttributes(frames=frames))
    return str(sample.uuid)


def _track(track: int, category: int, points: list[list[float]]) -> dict[str, Any]:
    return {
        "id": track,
        "track_id": track,
        "category_id": category,
        "is_keyframe": True,
        "type": "bbox",
        "points": points,
    }


def _put(emulator: Emulator, uuid: str, attributes: dict[str, Any]) -> requests.Response:
    return requests.put(
        f"{emulator.url}labels/{uuid}/ground-truth/",
        json={"label_status": "PRELABELED", "attributes": attributes},
        headers={"Authorization": f"APIKey {EMULATOR_API_KEY}"},
        timeout=5,
    )


@pytest.mark.parametrize(
    ("task_type", "annotations"),
    [("bboxes", [BOX]), ("vector", [BOX, TRIANGLE]), ("vector", [TRIANGLE])],
)
def test_a_vector_label_round_trips_with_its_task_type(
    segments_client: SegmentsClient, task_type: str, annotations: list[dict[str, Any]]
) -> None:
    uuid = _image_sample(segments_client, task_type)
    dataset = segments_client.get_dataset(f"jane/{task_type}")
    assert str(getattr(dataset.task_type, "value", dataset.task_type)) == task_type

    segments_client.add_label(uuid, "ground-truth", _label(*annotations), score=0.5)
    label = segments_client.get_label(uuid, labelset="ground-truth")

    assert label.label_type == task_type
    # Re-validated by task type (a polygon-only label parses as the point-cloud model, 12.4).
    attributes = ImageVectorLabelAttributes.model_validate(label.attributes.model_dump())
    got = [(a.id, a.category_id, a.type, a.points) for a in attributes.annotations]
    want = [(a["id"], a["category_id"], a["type"], a["points"]) for a in annotations]
    assert got == want


def test_a_sequence_vector_label_reads_back_with_type_and_points(
    segments_client: SegmentsClient,
) -> None:
    """The pydantic >= 2.8 pin (12.4): below it, type and points vanish on read."""
    uuid = _sequence_sample(segments_client)
    frames = [
        {"annotations": [_track(1, 2, [[1.0, 1.0], [4.0, 3.0]])]},
        {"annotations": [_track(1, 2, [[2.0, 1.0], [5.0, 3.0]])]},
    ]
    segments_client.add_label(
        uuid, "ground-truth", ImageSequenceVectorLabelAttributes(frames=frames)
    )
    label = segments_client.get_label(uuid, labelset="ground-truth")

    assert label.label_type == "image-vector-sequence"
    assert isinstance(label.attributes, ImageSequenceVectorLabelAttributes)
    read = [frame.annotations[0] for frame in label.attributes.frames]
    assert [(a.track_id, a.type, a.points) for a in read] == [
        (1, "bbox", [[1.0, 1.0], [4.0, 3.0]]),
        (1, "bbox", [[2.0, 1.0], [5.0, 3.0]]),
    ]


@pytest.mark.parametrize(
    ("task_type", "annotation", "message"),
    [
        ("bboxes", {**BOX, "points": [[1.0, 2.0]]}, "a bbox needs exactly 2 points, got 1"),
        ("vector", {**BOX, "points": [[1, 2], [3, 4], [5, 6]]}, "exactly 2 points, got 3"),
        ("vector", {**BOX, "points": [[9.0, 2.0], [1.0, 20.0]]}, "upper-left to its lower-right"),
        ("vector", {**TRIANGLE, "points": [[0, 0], [8, 0]]}, "polygon needs at least 3 points"),
        ("bboxes", TRIANGLE, "type 'polygon' is not one of bbox"),
        ("vector", {**BOX, "category_id": 9}, "category_id 9 is not a category"),
        ("vector", {**BOX, "points": [[1, 2, 3], [4, 5, 6]]}, "pairs of finite numbers"),
    ],
)
def test_a_malformed_vector_label_sent_by_the_sdk_is_refused_with_400(
    segments_client: SegmentsClient,
    emulator: Emulator,
    task_type: str,
    annotation: dict[str, Any],
    message: str,
) -> None:
    uuid = _image_sample(segments_client, task_type)

    with pytest.raises(NetworkError, match=message.lower()):
        segments_client.add_label(uuid, "ground-truth", _label(annotation))
    assert emulator.get_label(uuid) is None
    assert emulator.label_write_count(uuid) == 0


def test_an_unknown_type_is_refused_by_the_sdk_and_by_the_emulator(
    segments_client: SegmentsClient, emulator: Emulator
) -> None:
    uuid = _image_sample(segments_client, "vector")
    cuboid = {**BOX, "type": "cuboid"}
    with pytest.raises(ValidationError):
        segments_client.add_label(uuid, "ground-truth", _label(cuboid))

    response = _put(emulator, uuid, _label(cuboid))

    assert response.status_code == 400
    assert "type 'cuboid' is not one of" in response.json()["attributes"][0]
    assert emulator.label_write_count(uuid) == 0


def test_a_sequence_annotation_without_track_id_is_refused(
    segments_client: SegmentsClient, emulator: Emulator
) -> None:
    uuid = _sequence_sample(segments_client, n_frames=1)
    untracked = {k: v for k, v in _track(1, 2, [[1.0, 1.0], [4.0, 3.0]]).items() if k != "track_id"}

    response = _put(emulator, uuid, {"frames": [{"annotations": [untracked]}]})

    assert response.status_code == 400
    assert "track_id none" in response.json()["attributes"][0].lower()
    assert emulator.label_write_count(uuid) == 0


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([{"annotations": []}], "label has 1 frames but the sample has 2"),
        (
            [
                {"annotations": [_track(1, 2, [[1, 1], [4, 3]])]},
                {"annotations": [_track(1, 1, [[1, 1], [4, 3]])]},
            ],
            "track 1 changes category",
        ),
        (
            [
                {"annotations": [{**_track(1, 2, [[1, 1], [4, 3]]), "is_keyframe": False}]},
                {"annotations": []},
            ],
            "have no keyframe",
        ),
    ],
)
def test_a_malformed_sequence_vector_label_is_refused(
    segments_client: SegmentsClient,
    emulator: Emulator,
    frames: list[dict[str, Any]],
    message: str,
) -> None:
    uuid = _sequence_sample(segments_client)

    with pytest.raises(NetworkError, match=message):
        segments_client.add_label(
            uuid, "ground-truth", ImageSequenceVectorLabelAttributes(frames=frames)
        )
    assert emulator.label_write_count(uuid) == 0


def test_a_nan_coordinate_is_refused(segments_client: SegmentsClient, emulator: Emulator) -> None:
    uuid = _image_sample(segments_client, "bboxes")
    nan_box = {**BOX, "points": [[float("nan"), 2.0], [10.0, 20.0]]}

    with pytest.raises(NetworkError):
        segments_client.add_label(uuid, "ground-truth", _label(nan_box))
    assert emulator.label_write_count(uuid) == 0
