"""STQ and per-frame PQ on sequences small enough to work out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from segments import SegmentsClient

from prelabel.emulator import Emulator
from prelabel.emulator.sequences import write_sequence_ground_truth
from prelabel.evaluate.pq import PanopticFrame
from prelabel.evaluate.sequence import STQAccumulator, evaluate_sequence, ground_truth_id_map
from prelabel.segments.client import SegmentsApi
from prelabel.taxonomy import Category
from tests.connector_helpers import remote_settings
from tests.fixtures.emulator import DEMO_CATEGORIES, SeededSequences

PERSON, SKY = 1, 3
CATEGORIES = (Category(PERSON, "person", has_instances=True), Category(SKY, "sky"))


def frame(row: list[int], segments: dict[int, int]) -> PanopticFrame:
    """A 1-pixel-high frame; ``segments`` lists the categories of the ids it uses."""
    ids = {i for i in row if i}
    return PanopticFrame(
        np.array([row], np.uint32), {i: c for i, c in segments.items() if i in ids}
    )


TWO_PEOPLE = {1: PERSON, 2: PERSON}
GT_TWO = [frame([1, 1, 2, 2], TWO_PEOPLE), frame([1, 1, 2, 2], TWO_PEOPLE)]


def test_perfect_tracking_is_one() -> None:
    # Predicted ids differ from the ground truth's (5, 6): only consistency matters.
    pred = [frame([5, 5, 6, 6], {5: PERSON, 6: PERSON})] * 2

    result = evaluate_sequence(pred, GT_TWO, CATEGORIES)

    assert (result.stq, result.aq, result.sq) == (1.0, 1.0, 1.0)
    assert result.frame_pq == (1.0, 1.0) and result.mean_frame_pq == 1.0
    assert result.tracks == 2


def test_an_id_switch_lowers_aq_but_not_per_frame_pq() -> None:
    # Frame 0: [5, 5, 6, 6], frame 1: [6, 6, 5, 5]: the two people swap ids.
    # |g1| = |g2| = |p5| = |p6| = 4 pixels over both frames.
    # g1 meets p5 in frame 0 (TPA 2) and p6 in frame 1 (TPA 2); each tube IoU = 2 / (4+4-2) = 1/3.
    # AQ(g1) = 1/4 * (2 * 1/3 + 2 * 1/3) = 1/3, AQ(g2) likewise, so AQ = 1/3.
    # Every pixel is a person on both sides: SQ = 1. STQ = sqrt(1/3 * 1) = 0.5774.
    people = {5: PERSON, 6: PERSON}
    pred = [frame([5, 5, 6, 6], people), frame([6, 6, 5, 5], people)]

    result = evaluate_sequence(pred, GT_TWO, CATEGORIES)

    assert result.aq == pytest.approx(1 / 3)
    assert result.sq == 1.0
    assert result.stq == pytest.approx(math.sqrt(1 / 3))
    assert result.frame_pq == (1.0, 1.0)  # PQ sees no difference


def test_a_predicted_track_overlapping_no_ground_truth_track_leaves_aq_unchanged() -> None:
    # Both people tracked perfectly, plus a predicted person (id 7) where the ground truth has
    # sky (id 9). AQ averages over ground-truth tracks: p7 meets none, so AQ stays 1 over 2
    # tracks. Its wrong pixels are SQ's business: sky IoU 0 (2 pixels missed), person IoU
    # 8 / (8 + 2) = 0.8, so SQ = (0 + 0.8) / 2 = 0.4.
    gt_cats = {1: PERSON, 2: PERSON, 9: SKY}
    gt = [frame([1, 1, 2, 2, 9], gt_cats)] * 2
    pred = [frame([5, 5, 6, 6, 7], {5: PERSON, 6: PERSON, 7: PERSON})] * 2

    result = evaluate_sequence(pred, gt, CATEGORIES)

    assert result.tracks == 2
    assert result.aq == 1.0
    assert result.sq == pytest.approx(0.4)


def test_masks_wrong_in_one_frame_worked_by_hand() -> None:
    # Sky is id 9 (stuff), the person id 1; the last pixel is VOID in the ground truth.
    #   gt    frame 0: [9, 9, 1, 1, 0]   frame 1: [9, 9, 9, 1, 0]
    #   pred  frame 0: [9, 9, 1, 1, 0]   frame 1: [9, 9, 1, 1, 1]
    # VOID pixels are ignored, so the prediction's last pixel in frame 1 does not count.
    # SQ: sky   TP 4 (2 + 2), FN 1 (frame 1 pixel 2)       -> IoU 4/5
    #     person TP 3 (2 + 1), FP 1 (frame 1 pixel 2)      -> IoU 3/4;  SQ = (0.8 + 0.75)/2 = 0.775
    # AQ: g1 has 3 pixels, p1 has 4 on labeled pixels, TPA 3, IoU = 3 / (4 + 3 - 3) = 3/4;
    #     AQ(g1) = 1/3 * 3 * 3/4 = 0.75.   STQ = sqrt(0.75 * 0.775) = 0.76240
    # PQ frame 0 = 1. Frame 1: sky IoU 2/3 -> PQ 2/3; person: union = 3 + 1 - 1 - 1 (VOID) = 2,
    #     IoU 1/2 is not > 0.5 -> one FP and one FN, PQ 0; frame PQ = (2/3 + 0) / 2 = 1/3.
    #     Mean over frames = (1 + 1/3) / 2 = 2/3.
    cats = {9: SKY, 1: PERSON}
    gt = [frame([9, 9, 1, 1, 0], cats), frame([9, 9, 9, 1, 0], cats)]
    pred = [frame([9, 9, 1, 1, 0], cats), frame([9, 9, 1, 1, 1], cats)]

    result = evaluate_sequence(pred, gt, CATEGORIES)

    assert result.sq == pytest.approx(0.775)
    assert result.aq == pytest.approx(0.75)
    assert result.stq == pytest.approx(math.sqrt(0.75 * 0.775))
    assert result.frame_pq == pytest.approx((1.0, 1 / 3))
    assert result.mean_frame_pq == pytest.approx(2 / 3)


def test_a_missed_frame_and_tracks_of_two_sequences_pool() -> None:
    # Sequence 1 is perfect (AQ 1 for each of its 2 tracks). Sequence 2: the person is
    # predicted in frame 0 only: |g| = 4, |p| = 2, TPA 2, IoU 1/2, AQ(g) = 1/4 * 2 * 1/2 = 1/4.
    # Pooled AQ = (1 + 1 + 1/4) / 3 = 0.75. Ids 1 and 2 restart in sequence 2: no carry-over.
    accumulator = STQAccumulator(CATEGORIES)
    accumulator.add_sequence(GT_TWO, GT_TWO)
    gt = [frame([1, 1, 0, 0], TWO_PEOPLE), frame([1, 1, 0, 0], TWO_PEOPLE)]
    pred = [frame([1, 1, 0, 0], TWO_PEOPLE), frame([0, 0, 0, 0], {})]
    accumulator.add_sequence(pred, gt)

    result = accumulator.result()

    assert result.tracks == 3
    assert result.aq == pytest.approx(0.75)
    assert result.frame_pq[-1] == 0.0


def test_unequal_frame_counts_and_unended_sequences_are_refused() -> None:
    accumulator = STQAccumulator(CATEGORIES)
    with pytest.raises(ValueError, match="1 predicted frames for 2 ground-truth frames"):
        accumulator.add_sequence(GT_TWO[:1], GT_TWO)
    accumulator.add_frame(GT_TWO[0], GT_TWO[0])
    with pytest.raises(ValueError, match="end_sequence"):
        accumulator.result()


def test_ground_truth_sequences_are_read_from_the_emulator(
    segments_client: SegmentsClient, emulator: Emulator, seeded_sequences: SeededSequences
) -> None:
    api = SegmentsApi(segments_client, remote_settings(emulator.url))
    uuid_a, uuid_b = seeded_sequences.sample_uuids
    clip = seeded_sequences.clips["clip_b"]
    write_sequence_ground_truth(emulator, uuid_b, clip)

    label = api.label_frames(uuid_b, "ground-truth")

    assert api.label_frames(uuid_a, "ground-truth") is None
    assert label is not None and len(label) == len(clip)
    frames = []
    for (segments, url), scene in zip(label, clip, strict=True):
        id_map = ground_truth_id_map(api, url, scene.image.size)
        np.testing.assert_array_equal(id_map, scene.id_map)
        assert segments == scene.annotations
        frames.append(PanopticFrame(id_map, segments))
    categories = [Category(c["id"], c["name"], c["has_instances"]) for c in DEMO_CATEGORIES]
    assert evaluate_sequence(frames, frames, categories).stq == 1.0
    assert not ground_truth_id_map(api, None, (5, 4)).any()
    with pytest.raises(ValueError):
        ground_truth_id_map(api, label[0][1], (5, 4))  # not the frame's size
