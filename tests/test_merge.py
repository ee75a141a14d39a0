"""Panoptic merge: overlap order, min area, stuff union, resizing, and the map/segments contract.

Cases are literal pictures: in a mask ``#`` is a pixel of the candidate; in an expected map each
digit is a segment id (0 = unassigned).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

from prelabel.panoptic import MaskCandidate, PanopticPrediction
from prelabel.pipeline.merge import merge_panoptic


def m(*rows: str) -> npt.NDArray[np.bool_]:
    return np.array([[ch == "#" for ch in row] for row in rows], dtype=np.bool_)


def ids(*rows: str) -> npt.NDArray[np.uint32]:
    return np.array([[int(ch) for ch in row] for row in rows], dtype=np.uint32)


def thing(category_id: int, score: float, *rows: str) -> MaskCandidate:
    return MaskCandidate(mask=m(*rows), category_id=category_id, score=score, is_thing=True)


def stuff(category_id: int, score: float, *rows: str) -> MaskCandidate:
    return MaskCandidate(mask=m(*rows), category_id=category_id, score=score, is_thing=False)


FULL = ("######",) * 4


@dataclass(frozen=True)
class Seg:
    """Expected segment: (id, category_id, is_thing, score, area, bbox)."""

    id: int
    category_id: int
    is_thing: bool
    score: float
    area: int
    bbox: tuple[int, int, int, int]


def as_tuples(prediction: PanopticPrediction) -> list[Seg]:
    return [
        Seg(s.id, s.category_id, s.is_thing, pytest.approx(s.score), s.area, s.bbox)
        for s in prediction.segments
    ]


HIGH_LEFT = thing(1, 0.9, "###...", "###...", "......", "......")
LOW_RIGHT = thing(2, 0.6, "..###.", "..###.", "......", "......")
STUFF_LOW = stuff(5, 0.3, *FULL)
STUFF_HIGH_TOP = stuff(6, 0.7, "######", "######", "......", "......")

MERGE_CASES = [
    pytest.param(
        [stuff(7, 0.5, *FULL), thing(1, 0.9, "......", ".##...", ".##...", "......")],
        0,
        None,
        ids("222222", "211222", "211222", "222222"),
        [Seg(1, 1, True, 0.9, 4, (1, 1, 2, 2)), Seg(2, 7, False, 0.5, 20, (0, 0, 6, 4))],
        id="thing-over-stuff",
    ),
    pytest.param(
        [HIGH_LEFT, LOW_RIGHT],
        0,
        None,
        ids("111220", "111220", "000000", "000000"),
        [Seg(1, 1, True, 0.9, 6, (0, 0, 3, 2)), Seg(2, 2, True, 0.6, 4, (3, 0, 2, 2))],
        id="higher-thing-takes-overlap",
    ),
    pytest.param(
        [LOW_RIGHT, HIGH_LEFT],
        0,
        None,
        ids("111220", "111220", "000000", "000000"),
        [Seg(1, 1, True, 0.9, 6, (0, 0, 3, 2)), Seg(2, 2, True, 0.6, 4, (3, 0, 2, 2))],
        id="higher-thing-takes-overlap-reversed-input",
    ),
    pytest.param(
        [
            stuff(7, 0.5, *FULL),
            thing(1, 0.9, "###...", "###...", "......", "......"),
            thing(2, 0.6, ".###..", ".###..", "......", "......"),
        ],
        3,
        None,
        ids("111222", "111222", "222222", "222222"),
        [Seg(1, 1, True, 0.9, 6, (0, 0, 3, 2)), Seg(2, 7, False, 0.5, 18, (0, 0, 6, 4))],
        id="thing-under-min-area-after-overlap-returns-pixels-to-stuff",
    ),
    pytest.param(
        [
            thing(1, 0.9, "##....", "......", "......", "......"),
            thing(2, 0.6, "####..", "####..", "......", "......"),
        ],
        3,
        None,
        ids("111100", "111100", "000000", "000000"),
        [Seg(1, 2, True, 0.6, 8, (0, 0, 4, 2))],
        id="dropped-thing-does-not-hide-lower-thing",
    ),
    pytest.param(
        [
            stuff(7, 0.4, "###...", "###...", "###...", "###..."),
            stuff(7, 0.8, "...###", "...###", "......", "......"),
        ],
        0,
        None,
        ids("111111", "111111", "111000", "111000"),
        [Seg(1, 7, False, (12 * 0.4 + 6 * 0.8) / 18, 18, (0, 0, 6, 4))],
        id="stuff-of-one-category-is-one-segment-area-weighted-score",
    ),
    pytest.param(
        [STUFF_LOW, STUFF_HIGH_TOP],
        0,
        None,
        ids("222222", "222222", "111111", "111111"),
        [Seg(1, 5, False, 0.3, 12, (0, 2, 6, 2)), Seg(2, 6, False, 0.7, 12, (0, 0, 6, 2))],
        id="stuff-overlap-higher-score-wins",
    ),
    pytest.param(
        [STUFF_HIGH_TOP, STUFF_LOW],
        0,
        None,
        ids("222222", "222222", "111111", "111111"),
        [Seg(1, 5, False, 0.3, 12, (0, 2, 6, 2)), Seg(2, 6, False, 0.7, 12, (0, 0, 6, 2))],
        id="stuff-overlap-higher-score-wins-reversed-input",
    ),
    pytest.param(
        [stuff(5, 0.3, *FULL), thing(1, 0.9, "######", "######", "######", "####..")],
        3,
        None,
        ids("111111", "111111", "111111", "111100"),
        [Seg(1, 1, True, 0.9, 22, (0, 0, 6, 4))],
        id="stuff-under-min-area-becomes-unassigned",
    ),
    pytest.param(
        [thing(1, 0.9, "......", "......", "...#..", "......")],
        0,
        None,
        ids("000000", "000000", "000100", "000000"),
        [Seg(1, 1, True, 0.9, 1, (3, 2, 1, 1))],
        id="min-area-0-keeps-one-pixel",
    ),
    pytest.param(
        [thing(1, 0.9, "......", "......", "...#..", "......")],
        2,
        None,
        ids("000000", "000000", "000000", "000000"),
        [],
        id="min-area-2-drops-one-pixel",
    ),
    pytest.param(
        [
            stuff(9, 0.9, "......", "......", "......", "######"),
            stuff(4, 0.1, "......", "......", "######", "......"),
            thing(3, 0.5, "##....", "......", "......", "......"),
            thing(2, 0.8, "...##.", "......", "......", "......"),
            thing(8, 0.7, "......", "##....", "......", "......"),
        ],
        0,
        None,
        ids("330110", "220000", "444444", "555555"),
        [
            Seg(1, 2, True, 0.8, 2, (3, 0, 2, 1)),
            Seg(2, 8, True, 0.7, 2, (0, 1, 2, 1)),
            Seg(3, 3, True, 0.5, 2, (0, 0, 2, 1)),
            Seg(4, 4, False, 0.1, 6, (0, 2, 6, 1)),
            Seg(5, 9, False, 0.9, 6, (0, 3, 6, 1)),
        ],
        id="ids-things-by-score-then-stuff-by-category",
    ),
    pytest.param(
        [thing(1, 0.9, "......", "......"), stuff(2, 0.5, "......", "......")],
        0,
        None,
        ids("000000", "000000"),
        [],
        id="empty-masks-give-no-segments",
    ),
    pytest.param([], 0, (3, 2), ids("000", "000"), [], id="no-candidates-all-zero"),
    pytest.param(
        [stuff(5, 0.5, "###", "###"), thing(1, 0.9, "#..", "...")],
        4,
        (6, 4),
        ids("112222", "112222", "222222", "222222"),
        [Seg(1, 1, True, 0.9, 4, (0, 0, 2, 2)), Seg(2, 5, False, 0.5, 20, (0, 0, 6, 4))],
        id="upscale-x2-min-area-counted-at-output-size",
    ),
    pytest.param(
        [stuff(5, 0.5, "###", "###"), thing(1, 0.9, "#..", "...")],
        5,
        (6, 4),
        ids("111111", "111111", "111111", "111111"),
        [Seg(1, 5, False, 0.5, 24, (0, 0, 6, 4))],
        id="upscale-x2-thing-under-min-area-returns-to-stuff",
    ),
    pytest.param(
        [thing(1, 0.9, "#.", ".."), thing(2, 0.8, "..", ".#")],
        0,
        (3, 3),
        ids("100", "022", "022"),
        [Seg(1, 1, True, 0.9, 1, (0, 0, 1, 1)), Seg(2, 2, True, 0.8, 4, (1, 1, 2, 2))],
        id="upscale-non-integer-factor",
    ),
    pytest.param(
        [
            thing(1, 0.9, "....", "#..."),
            thing(2, 0.8, "....", "...#"),
            stuff(5, 0.5, "####", "####"),
        ],
        0,
        (2, 1),
        ids("21"),
        [Seg(1, 2, True, 0.8, 1, (1, 0, 1, 1)), Seg(2, 5, False, 0.5, 1, (0, 0, 1, 1))],
        id="downscale-one-pixel-thing-vanishes-even-at-min-area-0",
    ),
]


@pytest.mark.parametrize(("candidates", "min_area", "output_size", "expected_map", "expected"),
                         MERGE_CASES)  # fmt: skip
def test_merge_cases(
    candidates: list[MaskCandidate],
    min_area: int,
    output_size: tuple[int, int] | None,
    expected_map: npt.NDArray[np.uint32],
    expected: list[Seg],
) -> None:
    result = merge_panoptic(candidates, min_area=min_area, output_size=output_size)

    assert result.id_map.dtype == np.uint32
    np.testing.assert_array_equal(result.id_map, expected_map)
    assert as_tuples(result) == expected
    assert_contract(result, min_area)


def test_inputs_are_not_mutated() -> None:
    candidates = [stuff(5, 0.5, *FULL), HIGH_LEFT, LOW_RIGHT]
    before = [c.mask.copy() for c in candidates]

    merge_panoptic(candidates, min_area=0)

    for cand, mask in zip(candidates, before, strict=True):
        np.testing.assert_array_equal(cand.mask, mask)


ERROR_CASES = [
    pytest.param(
        [stuff(5, 0.5, *FULL), thing(1, 0.9, "###...", "###...", "###...")],
        {"min_area": 0},
        pytest.raises(ValueError, match=r"candidate 1: mask shape \(3, 6\).*\(4, 6\)"),
        id="shape-mismatch",
    ),
    pytest.param(
        [MaskCandidate(mask=np.ones((4, 6), np.uint8), category_id=1, score=0.5, is_thing=True)],
        {"min_area": 0},
        pytest.raises(ValueError, match="2-D bool array, got 2-D uint8"),
        id="non-bool-mask",
    ),
    pytest.param(
        [MaskCandidate(mask=np.ones((1, 4, 6), bool), category_id=1, score=0.5, is_thing=True)],
        {"min_area": 0},
        pytest.raises(ValueError, match="got 3-D bool"),
        id="3d-mask",
    ),
    pytest.param(
        [thing(1, float("nan"), *FULL)],
        {"min_area": 0},
        pytest.raises(ValueError, match="score must be finite"),
        id="nan-score",
    ),
    pytest.param(
        [thing(1, 0.5, *FULL)],
        {"min_area": -1},
        pytest.raises(ValueError, match="min_area must be >= 0"),
        id="negative-min-area",
    ),
    pytest.param(
        [],
        {"min_area": 0},
        pytest.raises(ValueError, match="size is unknown"),
        id="no-candidates-no-size",
    ),
    pytest.param(
        [thing(1, 0.5, *FULL)],
        {"min_area": 0, "output_size": (0, 4)},
        pytest.raises(ValueError, match="positive integers"),
        id="zero-output-size",
    ),
    pytest.param(
        [thing(1, 0.5, *FULL)],
        {"min_area": 0, "output_size": (12, 8)},
        nullcontext(),
        id="valid-does-not-raise",
    ),
]


@pytest.mark.parametrize(("candidates", "kwargs", "expectation"), ERROR_CASES)
def test_invalid_input_raises(
    candidates: list[MaskCandidate],
    kwargs: dict[str, object],
    expectation: AbstractContextManager[object],
) -> None:
    with expectation:
        merge_panoptic(candidates, **kwargs)  # type: ignore[arg-type]


# --- properties over random candidates --------------------------------------------------------


def random_candidates(rng: np.random.Generator, shape: tuple[int, int]) -> list[MaskCandidate]:
    """Rectangles and ellipses; few categories and coarse scores so merges and ties happen."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    out = []
    for _ in range(int(rng.integers(0, 9))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.5, h / 2 + 1), rng.uniform(0.5, w / 2 + 1)
        if rng.random() < 0.5:
            mask = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
        else:
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        out.append(
            MaskCandidate(
                mask=mask,
                category_id=int(rng.integers(1, 5)),
                score=round(float(rng.uniform(0, 1)), 1),
                is_thing=bool(rng.random() < 0.6),
            )
        )
    return out


def nearest(n_in: int, n_out: int) -> list[int]:
    """The merge's documented resize rule, written out per pixel."""
    return [((2 * i + 1) * n_in) // (2 * n_out) for i in range(n_out)]


def reference_merge(
    candidates: list[MaskCandidate], min_area: int, shape: tuple[int, int], size: tuple[int, int]
) -> tuple[npt.NDArray[np.uint32], list[tuple[int, bool, float]]]:
    """The rules applied naively at the output size: upscale every mask first, then decide."""
    out_w, out_h = size
    rows, cols = nearest(shape[0], out_h), nearest(shape[1], out_w)
    big = [c.mask[np.ix_(rows, cols)] for c in candidates]
    threshold = max(min_area, 1)

    best_key = np.full((out_h, out_w), -np.inf)
    best_cat = np.zeros((out_h, out_w), dtype=np.int64)
    for cand, mask in zip(candidates, big, strict=True):
        if cand.is_thing:
            continue
        for y, x in zip(*np.nonzero(mask), strict=True):
            key = cand.score * 1000 + cand.category_id  # score first, then category id
            if key > best_key[y, x]:
                best_key[y, x], best_cat[y, x] = key, cand.category_id

    id_map = np.zeros((out_h, out_w), dtype=np.uint32)
    taken = np.zeros((out_h, out_w), dtype=bool)
    segs: list[tuple[int, bool, float]] = []
    order = sorted(range(len(candidates)), key=lambda i: -candidates[i].score)
    for i in order:
        if not candidates[i].is_thing:
            continue
        claim = big[i] & ~taken
        if claim.sum() >= threshold:
            segs.append((candidates[i].category_id, True, candidates[i].score))
            id_map[claim] = len(segs)
            taken |= claim
    for cat in sorted({c.category_id for c in candidates if not c.is_thing}):
        visible = (best_cat == cat) & ~taken
        if visible.sum() >= threshold:
            parts = [c for c in candidates if not c.is_thing and c.category_id == cat]
            weights = [c.mask.sum() for c in parts]
            score = sum(w * c.score for w, c in zip(weights, parts, strict=True)) / sum(weights)
            segs.append((cat, False, score))
            id_map[visible] = len(segs)
    return id_map, segs


def assert_contract(result: PanopticPrediction, min_area: int) -> None:
    """The PanopticPrediction contract plus the merge's own promises."""
    id_map = result.id_map
    seg_ids = [s.id for s in result.segments]
    assert seg_ids == list(range(1, len(seg_ids) + 1)), "ids are compact and sorted"
    assert set(np.unique(id_map)) - {0} == set(seg_ids), "map ids == segment ids"
    counts = np.bincount(id_map.ravel(), minlength=len(seg_ids) + 1)
    flags = [s.is_thing for s in result.segments]
    assert flags == sorted(flags, reverse=True), "things before stuff"
    stuff_cats = [s.category_id for s in result.segments if not s.is_thing]
    assert stuff_cats == sorted(set(stuff_cats)), "one stuff segment per category, by id"
    for seg in result.segments:
        ys, xs = np.nonzero(id_map == seg.id)
        assert seg.area == counts[seg.id] >= max(min_area, 1)
        x0, y0 = int(xs.min()), int(ys.min())
        assert seg.bbox == (x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1)


@pytest.mark.parametrize("seed", range(60))
def test_random_candidates_match_reference_and_contract(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(3, 12)), int(rng.integers(3, 12)))
    size = (int(rng.integers(1, 25)), int(rng.integers(1, 25)))
    min_area = int(rng.choice([0, 1, 3, 8]))
    candidates = random_candidates(rng, shape)

    result = merge_panoptic(candidates, min_area=min_area, output_size=size)

    expected_map, expected_segs = reference_merge(candidates, min_area, shape, size)
    assert result.id_map.shape == (size[1], size[0])
    np.testing.assert_array_equal(result.id_map, expected_map)
    assert [(s.category_id, s.is_thing, s.score) for s in result.segments] == [
        (c, t, pytest.approx(sc)) for c, t, sc in expected_segs
    ]
    assert_contract(result, min_area)


@pytest.mark.parametrize("seed", range(10))
def test_result_does_not_depend_on_input_order_with_distinct_scores(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    candidates = [
        MaskCandidate(mask=c.mask, category_id=c.category_id, score=s, is_thing=c.is_thing)
        for c, s in zip(
            random_candidates(rng, (9, 11)), rng.permutation(np.linspace(0.1, 0.9, 9)), strict=False
        )
    ]
    shuffled = [candidates[i] for i in rng.permutation(len(candidates))]

    a = merge_panoptic(candidates, min_area=2, output_size=(17, 13))
    b = merge_panoptic(shuffled, min_area=2, output_size=(17, 13))

    np.testing.assert_array_equal(a.id_map, b.id_map)
    assert a.segments == b.segments


def test_same_input_gives_same_output() -> None:
    candidates = random_candidates(np.random.default_rng(7), (10, 10))

    a = merge_panoptic(candidates, min_area=1, output_size=(23, 19))
    b = merge_panoptic(candidates, min_area=1, output_size=(23, 19))

    np.testing.assert_array_equal(a.id_map, b.id_map)
    assert a.segments == b.segments


# --- masks cropped to a window: the same merge as full-size masks ------------------------------


def crop(cand: MaskCandidate, rng: np.random.Generator) -> MaskCandidate:
    """``cand`` with its mask cut to a window holding all its True pixels: the tight window, or
    one grown by a random margin (clipped to the frame), or left full-size, at random."""
    choice = rng.integers(0, 3)
    if choice == 0:
        return cand
    tight = cand.cropped()
    if choice == 1 or tight.mask.size == 0:
        return tight
    (height, width), (top, left) = cand.mask.shape, tight.origin
    r0, c0 = top - int(rng.integers(0, 3)), left - int(rng.integers(0, 3))
    r1 = top + tight.mask.shape[0] + int(rng.integers(0, 3))
    c1 = left + tight.mask.shape[1] + int(rng.integers(0, 3))
    r0, c0, r1, c1 = max(r0, 0), max(c0, 0), min(r1, height), min(c1, width)
    return MaskCandidate(
        mask=cand.mask[r0:r1, c0:c1].copy(),
        category_id=cand.category_id,
        score=cand.score,
        is_thing=cand.is_thing,
        box=cand.box,
        origin=(r0, c0),
        frame=(height, width),
    )


def random_ids(rng: np.random.Generator, candidates: list[MaskCandidate]) -> list[int]:
    """Valid ``segment_ids``: distinct per thing, one per stuff category, shuffled."""
    pool = iter(int(v) for v in rng.permutation(np.arange(1, 4 * len(candidates) + 2)))
    per_stuff: dict[int, int] = {}
    return [
        next(pool) if c.is_thing else per_stuff.setdefault(c.category_id, next(pool))
        for c in candidates
    ]


def assert_same_merge(a: PanopticPrediction, b: PanopticPrediction) -> None:
    np.testing.assert_array_equal(a.id_map, b.id_map)
    assert a.id_map.dtype == b.id_map.dtype
    assert a.segments == b.segments


@pytest.mark.parametrize("seed", range(60))
def test_cropped_masks_merge_exactly_like_full_size_masks(seed: int) -> None:
    rng = np.random.default_rng(5000 + seed)
    shape = (int(rng.integers(3, 14)), int(rng.integers(3, 14)))
    size = (int(rng.integers(1, 30)), int(rng.integers(1, 30)))
    min_area = int(rng.choice([0, 1, 3, 8]))
    full = random_candidates(rng, shape)
    cropped = [crop(c, rng) for c in full]
    kwargs: dict[str, object] = {"min_area": min_area}
    if rng.random() < 0.7:
        kwargs["output_size"] = size
    if full and rng.random() < 0.5:
        kwargs["segment_ids"] = random_ids(rng, full)

    expected = merge_panoptic(full, **kwargs)  # type: ignore[arg-type]
    got = merge_panoptic(cropped, **kwargs)  # type: ignore[arg-type]

    assert_same_merge(got, expected)


def test_cropped_things_over_stuff_literal_case() -> None:
    # A small high thing in the bottom-right corner, a low thing under it, a thing of 2 pixels
    # dropped by min_area, two stuff categories; the output is twice the size.
    high = thing(1, 0.9, "......", "......", "....##", "....##")
    low = thing(2, 0.5, "......", "...##.", "...##.", "......")
    tiny = thing(3, 0.7, "#.....", "#.....", "......", "......")
    sky = stuff(7, 0.4, "######", "######", "......", "......")
    road = stuff(8, 0.3, "......", "......", "######", "######")
    full = [high, low, tiny, sky, road]
    cropped = [c.cropped() for c in full]
    assert cropped[0].origin == (2, 4) and cropped[0].mask.shape == (2, 2)
    assert cropped[1].origin == (1, 3) and cropped[1].frame == (4, 6)
    kwargs: dict[str, object] = {"min_area": 9, "output_size": (12, 8)}

    got = merge_panoptic(cropped, **kwargs)  # type: ignore[arg-type]

    assert_same_merge(got, merge_panoptic(full, **kwargs))  # type: ignore[arg-type]
    small = np.repeat(np.repeat(ids("333333", "333223", "444211", "444411"), 2, 0), 2, 1)
    np.testing.assert_array_equal(got.id_map, small)
    assert [(s.id, s.category_id, s.area, s.bbox) for s in got.segments] == [
        (1, 1, 16, (8, 4, 4, 4)),
        (2, 2, 12, (6, 2, 4, 4)),  # its corner under the high thing is the high thing's
        (3, 7, 40, (0, 0, 12, 4)),  # the tiny thing's pixels stay sky
        (4, 8, 28, (0, 4, 8, 4)),
    ]
    with_ids = merge_panoptic(cropped, segment_ids=[10, 11, 12, 20, 21], **kwargs)  # type: ignore[arg-type]
    assert_same_merge(
        with_ids,
        merge_panoptic(full, segment_ids=[10, 11, 12, 20, 21], **kwargs),  # type: ignore[arg-type]
    )
    assert [s.id for s in with_ids.segments] == [10, 11, 20, 21]


def test_an_empty_crop_is_an_empty_candidate() -> None:
    empty = thing(1, 0.9, "......", "......").cropped()
    assert empty.mask.shape == (0, 0) and empty.frame == (2, 6)
    sky = stuff(2, 0.5, "######", "######")

    result = merge_panoptic([empty, sky], min_area=0)

    np.testing.assert_array_equal(result.id_map, np.ones((2, 6), np.uint32))
    assert [s.category_id for s in result.segments] == [2]


def test_mask_candidate_window_and_full_mask() -> None:
    full = thing(4, 0.8, "......", "..##..", "...#..", "......")
    cropped = full.cropped()

    assert cropped.origin == (1, 2) and cropped.frame == (4, 6) and cropped.frame_shape == (4, 6)
    np.testing.assert_array_equal(cropped.mask, m("##", ".#"))
    assert cropped.window == (slice(1, 3), slice(2, 4))
    np.testing.assert_array_equal(cropped.full_mask(), full.mask)
    assert full.full_mask() is full.mask and full.window == (slice(0, 4), slice(0, 6))
    np.testing.assert_array_equal(cropped.cropped().full_mask(), full.mask)  # crop of a crop


def _framed(mask: npt.NDArray[np.bool_], origin: tuple[int, int], frame: tuple[int, int] | None):
    return MaskCandidate(mask, 1, 0.5, True, origin=origin, frame=frame)


@pytest.mark.parametrize(
    ("candidates", "message"),
    [
        pytest.param(
            [_framed(np.ones((2, 2), bool), (3, 0), (4, 6))],
            r"candidate 0: crop of shape \(2, 2\) at origin \(3, 0\) does not fit its frame "
            r"\(4, 6\)",
            id="crop-past-the-bottom",
        ),
        pytest.param(
            [thing(1, 0.9, *FULL), _framed(np.ones((2, 2), bool), (0, -1), (4, 6))],
            r"candidate 1: crop .* at origin \(0, -1\)",
            id="negative-origin",
        ),
        pytest.param(
            [_framed(np.ones((2, 2), bool), (1, 1), None)],
            r"candidate 0: origin \(1, 1\) without a frame",
            id="origin-without-frame",
        ),
        pytest.param(
            [thing(1, 0.9, *FULL), _framed(np.ones((2, 2), bool), (0, 0), (4, 7))],
            r"candidate 1: frame \(4, 7\) differs from the first candidate's \(4, 6\)",
            id="frames-differ",
        ),
        pytest.param(
            [_framed(np.ones((2, 2), bool), (0, 0), (4, 7)), thing(1, 0.9, *FULL)],
            r"candidate 1: mask shape \(4, 6\) differs from the first candidate's \(4, 7\)",
            id="full-size-after-a-crop",
        ),
    ],
)
def test_invalid_crops_raise_naming_the_candidate(
    candidates: list[MaskCandidate], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        merge_panoptic(candidates, min_area=0)
