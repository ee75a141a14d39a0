"""The connector on ``image-segmentation-sequence`` datasets, through the real SDK.

Reading frames, loading one frame's image, building a sequence label from per-frame
predictions and writing it once, with the same safety as image labels (shared/segments-api.md
sections 10.2, 10.3, 10.6).
"""

from __future__ import annotations

import numpy as np
import pytest
from segments import SegmentsClient
from segments.typing import ImageSequenceSegmentationLabelAttributes
from segments.utils import load_label_bitmap_from_url

from prelabel.config import Settings
from prelabel.emulator import Emulator, FaultRule
from prelabel.emulator.sequences import FrameScene, frame_timestamp, write_sequence_ground_truth
from prelabel.errors import ConfigError, SampleError
from prelabel.formats.label import encode_label
from prelabel.panoptic import PanopticPrediction, Segment
from prelabel.segments.client import SampleRef, SegmentsApi, SequenceFrame
from prelabel.segments.dataset import check_dataset
from prelabel.segments.samples import load_frame, load_image
from prelabel.segments.upload import (
    PendingLabel,
    pending_sequence_label,
    upload_frame,
    write_label,
)
from tests.connector_helpers import remote_settings, requests_matching
from tests.fixtures.emulator import SeededDataset, SeededSequences

GT = "ground-truth"


@pytest.fixture
def api(segments_client: SegmentsClient, emulator: Emulator) -> SegmentsApi:
    return SegmentsApi(segments_client, remote_settings(emulator.url))


def prediction_of(scene: FrameScene) -> PanopticPrediction:
    """The exact prediction of a seeded frame (track ids as segment ids)."""
    segments = []
    for track_id, category_id in sorted(scene.annotations.items()):
        ys, xs = np.nonzero(scene.id_map == track_id)
        box = (int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1)
        segments.append(Segment(track_id, category_id, True, 0.8, len(xs), box))
    return PanopticPrediction(scene.id_map, tuple(segments))


def sequence_pending(
    api: SegmentsApi, sample: SampleRef, clip: list[FrameScene], empty: dict[tuple[int, int], str]
) -> PendingLabel:
    frames = [
        upload_frame(
            api,
            encode_label(prediction_of(scene)),
            size=scene.image.size,
            filename=f"{sample.name}-{index}.png",
            timestamp=sample.frames[index].timestamp,
            empty_urls=empty,
        )
        for index, scene in enumerate(clip)
    ]
    return pending_sequence_label(sample, frames, score=0.8)


def _samples(api: SegmentsApi, seeded: SeededSequences) -> dict[str, SampleRef]:
    return {s.name: s for s in api.iter_samples(seeded.full_name, GT)}


def test_check_dataset_accepts_sequences_and_says_so(
    api: SegmentsApi, seeded_sequences: SeededSequences, seeded_dataset: SeededDataset
) -> None:
    info, taxonomy = check_dataset(api, Settings(), seeded_sequences.full_name, GT, sequences=True)
    image_info, _ = check_dataset(api, Settings(), seeded_dataset.full_name, GT)

    assert (info.task_type, info.is_sequence) == ("image-segmentation-sequence", True)
    assert image_info.is_sequence is False
    assert {c.name for c in taxonomy.categories} >= {"person", "car"}


def test_front_ends_for_images_only_refuse_a_sequence_dataset_by_name(
    api: SegmentsApi, seeded_sequences: SeededSequences
) -> None:
    # Ray, serve, review and the demo call check_dataset without sequences=True.
    with pytest.raises(ConfigError, match=r"jane/clips is an image sequence.*`prelabel run`"):
        check_dataset(api, Settings(), seeded_sequences.full_name, GT)


def test_check_dataset_still_refuses_other_task_types(
    api: SegmentsApi, segments_client: SegmentsClient
) -> None:
    segments_client.add_dataset("points", task_type="keypoints")

    with pytest.raises(ConfigError, match=r"'keypoints'.*image-segmentation-sequence"):
        check_dataset(api, Settings(), "jane/points", GT)


def test_sample_refs_carry_the_frames(
    api: SegmentsApi, seeded_sequences: SeededSequences, seeded_dataset: SeededDataset
) -> None:
    listed = _samples(api, seeded_sequences)["clip_a"]
    fetched = api.get_sample(listed.uuid, GT)
    [image_sample, *_] = api.iter_samples(seeded_dataset.full_name, GT)

    assert fetched == listed
    assert listed.image_url is None
    assert [(f.name, f.timestamp) for f in listed.frames] == [
        (f"frame_{i:05d}", frame_timestamp(i)) for i in range(3)
    ]
    assert all(isinstance(f, SequenceFrame) and f.image_url for f in listed.frames)
    assert image_sample.frames == () and image_sample.image_url


def test_load_frame_decodes_the_frame_image(
    api: SegmentsApi, seeded_sequences: SeededSequences
) -> None:
    sample = _samples(api, seeded_sequences)["clip_a"]

    image = load_frame(api, sample, 2, max_pixels=10_000)

    expected = seeded_sequences.clips["clip_a"][2].image
    np.testing.assert_array_equal(np.asarray(image), np.asarray(expected))


def test_load_frame_errors_name_the_sample_and_the_frame(
    api: SegmentsApi, emulator: Emulator
) -> None:
    from prelabel.emulator.sequences import moving_shapes, seed_sequence_dataset

    clip = moving_shapes(3, seed=3)
    seed_sequence_dataset(emulator, "jane/broken", {"clip": [clip[0], None, clip[2]]}, [])
    [sample] = api.iter_samples("jane/broken", GT)

    with pytest.raises(
        SampleError, match=r"^frame 1 \(frame_00001\): image download failed: .*404"
    ):
        load_frame(api, sample, 1, max_pixels=10_000)
    with pytest.raises(SampleError, match=r"frame 0 \(frame_00000\): .*pixels"):
        load_frame(api, sample, 0, max_pixels=100)
    with pytest.raises(SampleError, match="frame 3: the sample has 3 frames") as error:
        load_frame(api, sample, 3, max_pixels=10_000)
    assert (error.value.sample_uuid, error.value.sample_name) == (sample.uuid, "clip")
    with pytest.raises(SampleError, match=r"^sample has no image URL$"):
        load_image(api, sample, max_pixels=10_000)


def test_sequence_label_is_written_once_with_typed_frames(
    api: SegmentsApi,
    emulator: Emulator,
    segments_client: SegmentsClient,
    seeded_sequences: SeededSequences,
) -> None:
    samples, empty = _samples(api, seeded_sequences), {}
    pendings = {
        name: sequence_pending(api, samples[name], seeded_sequences.clips[name], empty)
        for name in ("clip_a", "clip_b")
    }
    settings = remote_settings(emulator.url)
    emulator.clear_requests()

    for name, pending in pendings.items():
        result = write_label(
            api,
            settings,
            sample_uuid=samples[name].uuid,
            labelset=GT,
            pending=pending,
            overwrite=False,
        )
        assert result.written

    clip = seeded_sequences.clips["clip_b"]
    label = segments_client.get_label(samples["clip_b"].uuid, GT)
    assert isinstance(label.attributes, ImageSequenceSegmentationLabelAttributes)
    assert (label.label_status, label.score) == ("PRELABELED", 0.8)
    for index, (frame, scene) in enumerate(zip(label.attributes.frames, clip, strict=True)):
        assert frame.timestamp == frame_timestamp(index)
        assert [(a.id, a.track_id, a.category_id, a.is_keyframe) for a in frame.annotations] == [
            (t, t, c, True) for t, c in sorted(scene.annotations.items())
        ]
        bitmap = load_label_bitmap_from_url(frame.segmentation_bitmap.url)
        np.testing.assert_array_equal(bitmap, scene.id_map)
    # clip_b's middle frame is empty: its all-zero bitmap was uploaded once, for this size.
    assert list(empty) == [(64, 48)]
    assert label.attributes.frames[1].segmentation_bitmap.url == empty[(64, 48)]
    assert [r.method for r in requests_matching(emulator, "PUT", "/labels/")] == ["PUT", "PUT"]
    assert emulator.label_write_counts() == {(s.uuid, GT): 1 for s in samples.values()}

    state = api.label_state(samples["clip_b"].uuid, GT)
    assert state.bitmap_url is None
    assert state.bitmap_urls == tuple(
        f["segmentation_bitmap"]["url"] for f in pendings["clip_b"].attributes["frames"]
    )


def test_a_rerun_finds_its_own_sequence_label_and_a_person_s_is_never_overwritten(
    api: SegmentsApi, emulator: Emulator, seeded_sequences: SeededSequences
) -> None:
    samples = _samples(api, seeded_sequences)
    a, b = samples["clip_a"], samples["clip_b"]
    settings = remote_settings(emulator.url)
    pending_a = sequence_pending(api, a, seeded_sequences.clips["clip_a"], {})
    pending_b = sequence_pending(api, b, seeded_sequences.clips["clip_b"], {})
    write_label(api, settings, sample_uuid=a.uuid, labelset=GT, pending=pending_a, overwrite=False)
    write_sequence_ground_truth(emulator, b.uuid, seeded_sequences.clips["clip_b"])

    again = write_label(
        api, settings, sample_uuid=a.uuid, labelset=GT, pending=pending_a, overwrite=True
    )
    person = write_label(
        api, settings, sample_uuid=b.uuid, labelset=GT, pending=pending_b, overwrite=True
    )

    assert again.written and again.reason is None
    assert not person.written and person.reason is not None and "LABELED" in person.reason
    assert emulator.label_write_count(a.uuid) == 1
    assert emulator.label_write_count(b.uuid) == 0


def test_a_lost_sequence_put_is_found_on_the_server_and_not_repeated(
    segments_client: SegmentsClient, emulator: Emulator, seeded_sequences: SeededSequences
) -> None:
    # The PUT is applied after 0.3 s but the client gives up at 0.15 s; the retry re-reads,
    # finds a label with all of our frame bitmaps and does not write again.
    settings = remote_settings(
        emulator.url, read_timeout_s=0.15, retry_initial_s=0.8, retry_max_s=0.9
    )
    api = SegmentsApi(segments_client, settings)
    sample = _samples(api, seeded_sequences)["clip_a"]
    pending = sequence_pending(api, sample, seeded_sequences.clips["clip_a"], {})
    emulator.set_faults([FaultRule(path="/labels/*", method="PUT", latency_s=0.3, times=1)])

    result = write_label(
        api, settings, sample_uuid=sample.uuid, labelset=GT, pending=pending, overwrite=False
    )

    assert result.written
    assert emulator.label_write_count(sample.uuid) == 1
    assert len(requests_matching(emulator, "PUT", "/labels/")) == 1


def test_a_label_that_does_not_fit_the_sample_is_refused_before_any_write(
    api: SegmentsApi, emulator: Emulator, seeded_sequences: SeededSequences
) -> None:
    sample = _samples(api, seeded_sequences)["clip_a"]
    clip = seeded_sequences.clips["clip_a"]

    with pytest.raises(ValueError, match="the label has 2 frames but the sample has 3"):
        sequence_pending(api, sample, clip[:2], {})
    assert requests_matching(emulator, "PUT", "/labels/") == []
