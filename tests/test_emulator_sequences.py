"""``image-segmentation-sequence`` datasets in the emulator, driven through the real SDK.

Spec section 10.7: attributes stored as JSON (asset URLs made portable inside ``frames`` too),
``label_type`` = the dataset's task type, ``track_id`` kept on read; and, as emulator policy,
a DRF 400 ``{"attributes": [...]}`` for malformed sequence labels and samples.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import requests
from segments import SegmentsClient
from segments.exceptions import NetworkError
from segments.typing import (
    ImageFrame,
    ImageSequenceSampleAttributes,
    ImageSequenceSegmentationAnnotation,
    ImageSequenceSegmentationFrame,
    ImageSequenceSegmentationLabelAttributes,
)
from segments.utils import bitmap2file, load_image_from_url, load_label_bitmap_from_url

from prelabel.emulator import Emulator
from prelabel.emulator.sequences import frame_timestamp, moving_shapes
from prelabel.emulator.wire import ApiError
from tests.fixtures.emulator import (
    DEMO_CATEGORIES,
    EMULATOR_API_KEY,
    SeededDataset,
    SeededSequences,
    png_bytes,
)

SEQUENCE = "image-segmentation-sequence"
TASK_ATTRIBUTES = {"format_version": "0.1", "categories": [dict(c) for c in DEMO_CATEGORIES]}


def _sequence_sample(client: SegmentsClient, n_frames: int = 3) -> str:
    """A sequence dataset ``jane/seq`` with one sample of ``n_frames`` uploaded frames."""
    client.add_dataset("seq", task_type=SEQUENCE, task_attributes=TASK_ATTRIBUTES)
    frames = [
        ImageFrame(
            image={"url": client.upload_asset(io.BytesIO(png_bytes(8, 6, seed=i)), "f.png").url},
            name=f"frame_{i:05d}",
            timestamp=1000 + i,
        )
        for i in range(n_frames)
    ]
    sample = client.add_sample("jane/seq", "clip", ImageSequenceSampleAttributes(frames=frames))
    return str(sample.uuid)


def _frame(
    client: SegmentsClient, ids: dict[int, int], *, bitmap: bool = True, track_shift: int = 0
) -> ImageSequenceSegmentationFrame:
    """A frame whose 8x6 bitmap has one column block per id (id -> category)."""
    pixels = np.zeros((6, 8), np.uint32)
    for column, object_id in enumerate(ids):
        pixels[:, column] = object_id
    url = client.upload_asset(bitmap2file(pixels), "label.png").url if bitmap else None
    annotations = [
        ImageSequenceSegmentationAnnotation(
            id=i, track_id=i + track_shift, category_id=c, is_keyframe=True
        )
        for i, c in ids.items()
    ]
    if url is None:
        return ImageSequenceSegmentationFrame(annotations=annotations)
    return ImageSequenceSegmentationFrame(annotations=annotations, segmentation_bitmap={"url": url})


def test_sequence_sample_and_label_round_trip(
    segments_client: SegmentsClient, emulator: Emulator
) -> None:
    uuid = _sequence_sample(segments_client)
    frames = [_frame(segments_client, {1: 1, 2: 2}), _frame(segments_client, {})]
    frames.append(_frame(segments_client, {2: 2, 70000: 1}))
    frames[0].timestamp = 1000
    label = ImageSequenceSegmentationLabelAttributes(frames=frames, format_version="0.1")

    written = segments_client.add_label(uuid, "ground-truth", label, score=0.5)
    read = segments_client.get_label(uuid, "ground-truth")
    sample = segments_client.get_sample(uuid)

    assert written.label_type == read.label_type == SEQUENCE
    assert isinstance(read.attributes, ImageSequenceSegmentationLabelAttributes)
    assert [
        [(a.id, a.track_id, a.is_keyframe) for a in f.annotations] for f in read.attributes.frames
    ] == [
        [(1, 1, True), (2, 2, True)],
        [],
        [(2, 2, True), (70000, 70000, True)],
    ]
    assert read.attributes.frames[0].timestamp == 1000
    bitmap = load_label_bitmap_from_url(read.attributes.frames[2].segmentation_bitmap.url)
    np.testing.assert_array_equal(bitmap[0, :3], [2, 70000, 0])
    assert isinstance(sample.attributes, ImageSequenceSampleAttributes)
    assert [(f.name, f.timestamp) for f in sample.attributes.frames] == [
        ("frame_00000", 1000),
        ("frame_00001", 1001),
        ("frame_00002", 1002),
    ]
    # Stored host-free inside frames (survives a restart on another port), served back local.
    stored = emulator.store.get_sample(uuid).attributes["frames"][1]["image"]["url"]
    assert stored.startswith("emulator-asset:///")
    assert sample.attributes.frames[1].image.url.startswith(emulator.url)
    stored_label = emulator.store.get_label(uuid, "ground-truth")
    assert stored_label is not None and stored_label.attributes is not None
    assert stored_label.attributes["frames"][0]["segmentation_bitmap"]["url"].startswith(
        "emulator-asset:///"
    )


def test_listing_with_full_labels_parses_sequences(
    segments_client: SegmentsClient, emulator: Emulator
) -> None:
    uuid = _sequence_sample(segments_client, n_frames=2)
    label = ImageSequenceSegmentationLabelAttributes(
        frames=[_frame(segments_client, {3: 3}), _frame(segments_client, {3: 3})]
    )
    segments_client.add_label(uuid, "ground-truth", label)

    [listed] = segments_client.get_samples(
        "jane/seq", labelset="ground-truth", include_full_label=True
    )

    assert listed.label.label_type == SEQUENCE
    assert [f.annotations[0].track_id for f in listed.label.attributes.frames] == [3, 3]
    assert emulator.label_write_count(uuid) == 1


def _bad_labels(client: SegmentsClient) -> dict[str, tuple[Any, str]]:
    ok = {1: 1}
    return {
        "two frames for three": (
            ImageSequenceSegmentationLabelAttributes(frames=[_frame(client, ok)] * 2),
            "label has 2 frames but the sample has 3",
        ),
        "id twice in a frame": (
            ImageSequenceSegmentationLabelAttributes(
                frames=[
                    _frame(client, ok),
                    ImageSequenceSegmentationFrame(
                        annotations=[
                            ImageSequenceSegmentationAnnotation(id=1, track_id=1, category_id=1)
                        ]
                        * 2,
                        segmentation_bitmap={"url": "http://x/b.png"},
                    ),
                    _frame(client, ok),
                ]
            ),
            "frame 1: annotation id 1 is used twice",
        ),
        "track id differs": (
            ImageSequenceSegmentationLabelAttributes(
                frames=[_frame(client, ok), _frame(client, ok, track_shift=5), _frame(client, ok)]
            ),
            "annotation id 1 has track_id 6",
        ),
        "annotations without a bitmap": (
            ImageSequenceSegmentationLabelAttributes(
                frames=[_frame(client, ok), _frame(client, ok), _frame(client, ok, bitmap=False)]
            ),
            "frame 2: 'segmentation_bitmap' must be an object",
        ),
        "single-image label": (
            {"annotations": [{"id": 1, "category_id": 1}], "segmentation_bitmap": {"url": "u"}},
            "single-image label attributes cannot be written to a sequence",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "two frames for three",
        "id twice in a frame",
        "track id differs",
        "annotations without a bitmap",
        "single-image label",
    ],
)
def test_malformed_sequence_labels_are_refused(
    segments_client: SegmentsClient, emulator: Emulator, case: str
) -> None:
    uuid = _sequence_sample(segments_client)
    attributes, message = _bad_labels(segments_client)[case]

    with pytest.raises(NetworkError, match=message.lower().replace("'", ".")):
        segments_client.add_label(uuid, "ground-truth", attributes)

    assert emulator.get_label(uuid) is None
    assert emulator.label_write_count(uuid) == 0


def test_a_label_without_frames_is_refused(
    segments_client: SegmentsClient, emulator: Emulator
) -> None:
    # The SDK refuses to send this shape at all, so it goes over plain HTTP.
    uuid = _sequence_sample(segments_client)
    response = requests.put(
        f"{emulator.url}labels/{uuid}/ground-truth/",
        json={"label_status": "PRELABELED", "attributes": {"format_version": "0.1"}},
        headers={"Authorization": f"APIKey {EMULATOR_API_KEY}"},
        timeout=5,
    )

    assert response.status_code == 400
    assert response.json() == {"attributes": ["'frames' is required."]}


def test_sequence_attributes_are_refused_on_an_image_dataset(
    segments_client: SegmentsClient, seeded_dataset: SeededDataset, emulator: Emulator
) -> None:
    uuid = seeded_dataset.sample_uuids[0]
    label = ImageSequenceSegmentationLabelAttributes(frames=[_frame(segments_client, {1: 1})])
    frames = ImageSequenceSampleAttributes(frames=[ImageFrame(image={"url": "http://x/a.png"})])

    with pytest.raises(NetworkError, match="sequence label attributes"):
        segments_client.add_label(uuid, "ground-truth", label)
    with pytest.raises(NetworkError, match="cannot be added to an image dataset"):
        segments_client.add_sample(seeded_dataset.full_name, "clip", frames)
    assert emulator.label_write_count(uuid) == 0


def test_image_samples_are_refused_on_a_sequence_dataset(
    segments_client: SegmentsClient, emulator: Emulator
) -> None:
    segments_client.add_dataset("seq", task_type=SEQUENCE, task_attributes=TASK_ATTRIBUTES)

    with pytest.raises(NetworkError, match="single-image attributes"):
        segments_client.add_sample("jane/seq", "a.png", {"image": {"url": "http://x/a.png"}})
    with pytest.raises(ApiError, match="Frame 0 must be an object"):  # the SDK would not send it
        emulator.add_samples("jane/seq", [{"name": "b", "attributes": {"frames": [1]}}])
    assert segments_client.get_samples("jane/seq") == []


def test_seeded_sequences_serve_their_frames(
    segments_client: SegmentsClient, seeded_sequences: SeededSequences
) -> None:
    samples = segments_client.get_samples(seeded_sequences.full_name)
    dataset = segments_client.get_dataset(seeded_sequences.full_name)

    assert dataset.task_type == SEQUENCE
    assert [s.name for s in samples] == ["clip_a", "clip_b"]
    clip = seeded_sequences.clips["clip_a"]
    frames = samples[0].attributes.frames
    assert [f.timestamp for f in frames] == [frame_timestamp(i) for i in range(3)]
    image = load_image_from_url(frames[2].image.url)
    np.testing.assert_array_equal(np.asarray(image), np.asarray(clip[2].image))
    assert seeded_sequences.clips["clip_b"][1].annotations == {}


def test_moving_shapes_move_and_keep_their_track_ids() -> None:
    clip = moving_shapes(3, seed=1, sizes=[(64, 48), (32, 24), (64, 48)], empty_frames={1})

    assert [f.id_map.shape for f in clip] == [(48, 64), (24, 32), (48, 64)]
    assert clip[0].annotations == clip[2].annotations == {1: 1, 2: 2}
    assert clip[1].annotations == {} and not clip[1].id_map.any()
    for track in (1, 2):  # each track moved between frame 0 and frame 2
        assert not np.array_equal(clip[0].id_map == track, clip[2].id_map == track)
    assert {int(i) for i in np.unique(clip[0].id_map)} == {0, 1, 2}
