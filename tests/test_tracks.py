"""Track ids across frames (prelabel.pipeline.tracks) on a deterministic fake tracker.

The fake tracker follows a scripted world: each frame lists the true objects (a name and a
mask at that frame's size). A prompted object is bound to the world object its prompt overlaps
most; on every later frame the tracker returns that object's mask, or "not present" once the
world has no such object. Detections on keyframes are scripted from the same world, so the
tests state exactly what a perfect tracker and detector would see.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from prelabel.panoptic import FramePrediction, MaskCandidate
from prelabel.pipeline.merge import merge_panoptic
from prelabel.pipeline.tracks import TrackedObject, TrackLedger, mask_iou

World = list[dict[str, npt.NDArray[np.bool_]]]


def box(size: tuple[int, int], x: int, y: int, w: int = 8, h: int = 8) -> npt.NDArray[np.bool_]:
    width, height = size
    mask = np.zeros((height, width), dtype=bool)
    mask[y : y + h, x : x + w] = True
    return mask


class FakeTracker:
    def __init__(self, world: World) -> None:
        self.world = world
        self.frame = -1
        self.bound: dict[int, str] = {}
        self.removed: list[int] = []

    def _object(self, name: str) -> TrackedObject:
        mask = self.world[self.frame].get(name)
        if mask is None:
            height, width = next(iter(self.world[self.frame].values()), np.zeros((1, 1))).shape
            return TrackedObject(np.zeros((height, width), bool), present=False, score=0.0)
        return TrackedObject(mask, present=True, score=0.9)

    def advance(self, image: Image.Image) -> dict[int, TrackedObject]:
        self.frame += 1
        return {obj_id: self._object(name) for obj_id, name in self.bound.items()}

    def add_objects(self, masks: dict[int, npt.NDArray[np.bool_]]) -> dict[int, TrackedObject]:
        names = list(self.world[self.frame])
        truth = np.stack([self.world[self.frame][n] for n in names])
        for obj_id, mask in masks.items():
            assert obj_id not in self.bound, "an id was given twice"
            self.bound[obj_id] = names[int(mask_iou(mask[None], truth)[0].argmax())]
        return {obj_id: self._object(self.bound[obj_id]) for obj_id in masks}

    def remove_objects(self, ids: Iterable[int]) -> None:
        for obj_id in ids:
            del self.bound[obj_id]
            self.removed.append(obj_id)


def run(
    world: World,
    sizes: list[tuple[int, int]],
    categories: dict[str, int],
    *,
    interval: int = 10,
    stuff: dict[int, int] | None = None,
    detect: dict[int, list[tuple[str, int]]] | None = None,
    cropped: bool = False,
) -> tuple[list[FramePrediction], TrackLedger]:
    """Predict every frame; keyframes detect every world object (or ``detect[frame]``), their
    masks cut to their windows when ``cropped`` (as grounded_sam gives them)."""
    ledger = TrackLedger(FakeTracker(world), match_iou=0.5, min_area=0)
    results = []
    for index, size in enumerate(sizes):
        is_keyframe = index % interval == 0
        detections = None
        if is_keyframe:
            listed = (detect or {}).get(index) or [(n, categories[n]) for n in world[index]]
            detections = [
                MaskCandidate(world[index][n], category_id=c, score=0.8, is_thing=True)
                for n, c in listed
            ]
            if cropped:
                detections = [d.cropped() for d in detections]
                assert all(d.mask.shape != size[::-1] for d in detections)
        things = ledger.things(Image.new("RGB", size), detections)
        stuff_cands = [
            MaskCandidate(np.ones(size[::-1], bool), category_id=c, score=0.5, is_thing=False)
            for c in (stuff or {}).get(index, ())
        ]
        results.append(ledger.frame(things, stuff_cands, output_size=size, is_keyframe=is_keyframe))
    return results, ledger


def ids_at(result: FramePrediction, mask: npt.NDArray[np.bool_]) -> set[int]:
    return set(np.unique(result.prediction.id_map[mask]).tolist()) - {0}


SIZE = (64, 48)


def test_a_moving_object_keeps_its_id_across_keyframes() -> None:
    world = [{"a": box(SIZE, 2 + 3 * k, 10)} for k in range(12)]
    results, ledger = run(world, [SIZE] * 12, {"a": 1})
    ids = [ids_at(r, world[k]["a"]) for k, r in enumerate(results)]
    assert ids == [{1}] * 12
    assert [r.is_keyframe for r in results] == [k in (0, 10) for k in range(12)]
    (track,) = ledger.table()
    assert (track.track_id, track.category_id, track.is_thing) == (1, 1, True)
    assert track.frames == tuple(range(12))


def test_a_new_object_gets_a_new_id_at_the_next_keyframe() -> None:
    world = [
        {"a": box(SIZE, 2, 2), **({"b": box(SIZE, 40, 30)} if k >= 5 else {})} for k in range(11)
    ]
    results, ledger = run(world, [SIZE] * 11, {"a": 1, "b": 1})
    assert all(ids_at(r, world[k]["a"]) == {1} for k, r in enumerate(results))
    # b exists from frame 5 but is detected only at keyframe 10.
    assert [ids_at(r, box(SIZE, 40, 30)) for r in results[5:]] == [set()] * 5 + [{2}]
    assert [t.track_id for t in ledger.table()] == [1, 2]


def test_a_vanished_object_ends_its_track_and_returns_with_a_new_id() -> None:
    world = [({"a": box(SIZE, 10, 10)} if k < 3 or k >= 8 else {}) for k in range(11)]
    world = [w or {"other": box(SIZE, 50, 40, 2, 2)} for w in world]
    results, ledger = run(world, [SIZE] * 11, {"a": 1, "other": 2}, detect={0: [("a", 1)]})
    for k in (0, 1, 2):
        assert ids_at(results[k], world[k]["a"]) == {1}
    assert all(not r.prediction.segments for r in results[3:10])
    assert ids_at(results[10], world[10]["a"]) == {2}
    first = ledger.table()[0]
    assert first.track_id == 1 and first.frames == (0, 1, 2)
    assert 1 not in ledger.live_tracks
    tracker = ledger.tracker
    assert isinstance(tracker, FakeTracker) and tracker.removed == [1]


def test_a_detection_of_another_category_never_continues_a_track() -> None:
    # b is a one pixel shift of a (IoU 0.78): the same object, seen as another category.
    world = [{"a": box(SIZE, 10, 10)} for _ in range(10)]
    world.append({"a": box(SIZE, 10, 10), "b": box(SIZE, 11, 10)})
    results, ledger = run(world, [SIZE] * 11, {"a": 1}, detect={0: [("a", 1)], 10: [("b", 2)]})
    table = ledger.table()
    assert [(t.track_id, t.category_id) for t in table] == [(1, 1), (2, 2)]
    assert ledger.live_tracks == {1, 2}
    # Equal scores: the older track keeps the shared pixels, the new one gets the rest.
    assert ids_at(results[10], world[10]["a"]) == {1}
    assert ids_at(results[10], world[10]["b"] & ~world[10]["a"]) == {2}
    categories = {s.id: s.category_id for r in results for s in r.prediction.segments}
    assert categories == {t.track_id: t.category_id for t in table}


def test_matching_needs_enough_overlap() -> None:
    # The object jumps between keyframes while the tracker lags behind: below match_iou the
    # detection is a new track although the category is the same.
    world = [{"a": box(SIZE, 2, 2)} for _ in range(11)]
    results, ledger = run(world, [SIZE] * 11, {"a": 1}, detect={10: [("a", 1)]})
    assert [t.track_id for t in ledger.table()] == [1]  # perfect overlap: continued
    shifted = [{"a": box(SIZE, 2, 2)}] * 10 + [{"a": box(SIZE, 2, 2), "b": box(SIZE, 6, 2)}]
    results, ledger = run(shifted, [SIZE] * 11, {"a": 1, "b": 1}, detect={10: [("b", 1)]})
    # b overlaps a by 4/12 < 0.5: a new track, and a's track continues beside it.
    assert [t.track_id for t in ledger.table()] == [1, 2]
    assert ids_at(results[10], box(SIZE, 10, 2, 4, 8)) == {2}


def test_an_overlap_of_exactly_match_iou_continues_the_track() -> None:
    # match_iou is "at least": the top half of a's box overlaps it by 32/64 = 0.5 exactly
    # (exact in floating point), so the detection continues track 1 rather than starting one.
    half = box(SIZE, 2, 2, 8, 4)
    assert mask_iou(half[None], box(SIZE, 2, 2)[None])[0, 0] == 0.5
    world = [{"a": box(SIZE, 2, 2)} for _ in range(10)] + [{"a": box(SIZE, 2, 2), "b": half}]
    results, ledger = run(world, [SIZE] * 11, {"a": 1, "b": 1}, detect={10: [("b", 1)]})
    assert ledger.live_tracks == {1}  # no second track was started for the detection
    assert [t.track_id for t in ledger.table()] == [1]
    assert ids_at(results[10], box(SIZE, 2, 2)) == {1}


@pytest.mark.parametrize("interval", [1, 3])
def test_frames_of_different_sizes_keep_ids_and_their_own_size(interval: int) -> None:
    sizes = [(64, 48), (32, 24), (96, 40), (64, 48), (50, 70)]
    world = [{"a": box(s, s[0] // 4, s[1] // 4, s[0] // 2, s[1] // 2)} for s in sizes]
    results, _ = run(world, sizes, {"a": 1}, interval=interval, stuff={k: [7] for k in range(5)})
    for result, size, frame in zip(results, sizes, world, strict=True):
        assert result.prediction.size == size
        assert ids_at(result, frame["a"]) == {1}
        assert ids_at(result, ~frame["a"]) == {2}  # the stuff id, the same on every frame


def test_stuff_keeps_one_id_per_category_for_the_sequence() -> None:
    world = [{"a": box(SIZE, 2 + k, 2)} for k in range(4)]
    stuff = {0: [5], 1: [6], 2: [5, 6], 3: [5]}
    results, ledger = run(world, [SIZE] * 4, {"a": 1}, stuff=stuff, interval=2)
    by_category: dict[int, set[int]] = {}
    for result in results:
        for seg in result.prediction.segments:
            by_category.setdefault(seg.category_id, set()).add(seg.id)
    assert by_category == {1: {1}, 5: {2}, 6: {3}}
    assert {t.track_id: t.is_thing for t in ledger.table()} == {1: True, 2: False, 3: False}


def test_merge_with_given_ids_keeps_the_compact_merge_pixels() -> None:
    a, b = box(SIZE, 0, 0, 20, 20), box(SIZE, 10, 10, 20, 20)
    sky = np.ones(SIZE[::-1], bool)
    cands = [
        MaskCandidate(a, 1, 0.9, True),
        MaskCandidate(b, 1, 0.5, True),
        MaskCandidate(sky, 9, 0.3, False),
    ]
    plain = merge_panoptic(cands, min_area=0)
    given = merge_panoptic(cands, min_area=0, segment_ids=[70, 3, 12])
    remap = {1: 70, 2: 3, 3: 12}
    assert np.array_equal(np.vectorize(lambda i: remap.get(i, 0))(plain.id_map), given.id_map)
    assert [s.id for s in given.segments] == [3, 12, 70]
    with pytest.raises(ValueError, match="unique"):
        merge_panoptic(cands, min_area=0, segment_ids=[4, 4, 5])
    with pytest.raises(ValueError, match="outside"):
        merge_panoptic(cands, min_area=0, segment_ids=[1, 2, 2**24])


def test_detections_cropped_to_their_windows_track_like_full_size_ones() -> None:
    # a moves, b appears at frame 3 and vanishes at frame 7, c overlaps a; keyframes every 3.
    world = [
        {
            "a": box(SIZE, 2 + 3 * k, 10),
            "c": box(SIZE, 6 + 3 * k, 14, 10, 6),
            **({"b": box(SIZE, 40, 30)} if 3 <= k < 7 else {}),
        }
        for k in range(10)
    ]
    categories = {"a": 1, "b": 2, "c": 1}
    full, full_ledger = run(world, [SIZE] * 10, categories, interval=3, stuff={0: [9], 5: [9]})
    crops, crop_ledger = run(
        world, [SIZE] * 10, categories, interval=3, stuff={0: [9], 5: [9]}, cropped=True
    )

    for a, b in zip(full, crops, strict=True):
        np.testing.assert_array_equal(a.prediction.id_map, b.prediction.id_map)
        assert a.prediction.segments == b.prediction.segments
    assert full_ledger.table() == crop_ledger.table()
    assert len(full_ledger.table()) == 4  # a, c, b, and the stuff
