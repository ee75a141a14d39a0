"""Panoptic quality: hand-computed cases, panopticapi's definition, and COCO exports read back.

Maps are written as rows of digits (the segment id of each pixel, ``.`` for 0) so each expected
number can be checked by counting characters.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from prelabel.config import PipelineSettings
from prelabel.errors import ConfigError
from prelabel.evaluate import pq as evaluate_module
from prelabel.evaluate.exports import (
    evaluate_coco_dirs,
    locate_coco_panoptic,
    read_coco_categories,
    read_coco_panoptic,
)
from prelabel.evaluate.pq import (
    CategoryPQ,
    PanopticFrame,
    PQAccumulator,
    PQResult,
    frame_from_prediction,
)
from prelabel.evaluate.results import format_table
from prelabel.formats.coco_panoptic import CocoPanopticWriter
from prelabel.panoptic import PanopticPrediction, Segment
from prelabel.progress import TqdmProgress
from prelabel.taxonomy import Category, build_taxonomy

PERSON = Category(id=1, name="person", has_instances=True)
CAR = Category(id=2, name="car", has_instances=True)
SKY = Category(id=3, name="sky")
ROAD = Category(id=4, name="road")
TREE = Category(id=5, name="tree")  # never occurs: must stay out of every mean
CATEGORIES = (PERSON, CAR, SKY, ROAD, TREE)

#: (tp, fp, fn, pq, sq, rq) of one category.
Stats = tuple[int, int, int, float, float, float]


def grid(*rows: str) -> npt.NDArray[np.uint32]:
    return np.array([[0 if c == "." else int(c) for c in row] for row in rows], dtype=np.uint32)


def frame(id_map: npt.NDArray[np.uint32], **categories: Category) -> PanopticFrame:
    """``frame(m, s1=PERSON, s3=SKY)``: segment 1 is a person, segment 3 is sky."""
    return PanopticFrame(
        id_map=id_map, segments={int(k[1:]): cat.id for k, cat in categories.items()}
    )


def evaluate(*pairs: tuple[PanopticFrame, PanopticFrame]) -> PQResult:
    accumulator = PQAccumulator(CATEGORIES)
    for prediction, ground_truth in pairs:
        accumulator.add(prediction, ground_truth)
    return accumulator.result()


def by_id(result: PQResult) -> dict[int, CategoryPQ]:
    return {c.category_id: c for c in result.per_category}


# --- hand-computed cases -------------------------------------------------------------------------

TWO_PERSONS = grid(
    "333333",
    "311322",
    "311322",
    "444444",
)
TWO_PERSONS_SEGMENTS = {"s1": PERSON, "s2": PERSON, "s3": SKY, "s4": ROAD}

HAND_CASES = [
    pytest.param(
        frame(TWO_PERSONS, **TWO_PERSONS_SEGMENTS),
        frame(TWO_PERSONS, **TWO_PERSONS_SEGMENTS),
        {PERSON.id: (2, 0, 0, 1, 1, 1), SKY.id: (1, 0, 0, 1, 1, 1), ROAD.id: (1, 0, 0, 1, 1, 1)},
        id="perfect-match",
    ),
    pytest.param(
        # Person 2 is not predicted: TP 1, FN 1, RQ = 1 / (1 + 0.5).
        frame(grid("333333", "3113..", "3113..", "444444"), s1=PERSON, s3=SKY, s4=ROAD),
        frame(TWO_PERSONS, **TWO_PERSONS_SEGMENTS),
        {
            PERSON.id: (1, 0, 1, 2 / 3, 1, 2 / 3),
            SKY.id: (1, 0, 0, 1, 1, 1),
            ROAD.id: (1, 0, 0, 1, 1, 1),
        },
        id="one-missed-thing",
    ),
    pytest.param(
        # An extra person (9) on 4 of the 14 sky pixels: person FP 1; sky IoU 10/14.
        frame(grid("333333", "311399", "311399", "444444"), s1=PERSON, s3=SKY, s4=ROAD, s9=PERSON),
        frame(grid("333333", "311333", "311333", "444444"), s1=PERSON, s3=SKY, s4=ROAD),
        {
            PERSON.id: (1, 1, 0, 2 / 3, 1, 2 / 3),
            SKY.id: (1, 0, 0, 5 / 7, 5 / 7, 1),
            ROAD.id: (1, 0, 0, 1, 1, 1),
        },
        id="one-false-positive",
    ),
    pytest.param(
        frame(grid("333333...."), s3=SKY),
        frame(grid("3333333333"), s3=SKY),
        {SKY.id: (1, 0, 0, 0.6, 0.6, 1)},
        id="stuff-iou-0.6-matches",
    ),
    pytest.param(
        frame(grid("33333....."), s3=SKY),
        frame(grid("3333333333"), s3=SKY),
        {SKY.id: (0, 1, 1, 0, 0, 0)},
        id="stuff-iou-0.5-does-not-match",
    ),
    pytest.param(
        frame(grid("3333......"), s3=SKY),
        frame(grid("3333333333"), s3=SKY),
        {SKY.id: (0, 1, 1, 0, 0, 0)},
        id="stuff-iou-0.4-is-fp-and-fn",
    ),
    pytest.param(
        # 5 predicted pixels are void in the ground truth: union 10 + 5 - 5 - 5 = 5, IoU 1.
        frame(grid("3333333333"), s3=SKY),
        frame(grid(".....33333"), s3=SKY),
        {SKY.id: (1, 0, 0, 1, 1, 1)},
        id="prediction-over-void-not-penalised",
    ),
    pytest.param(
        # The person is 3 of 4 pixels in void: ignored, neither FP nor anything else.
        frame(grid("1111333333"), s1=PERSON, s3=SKY),
        frame(grid("...3333333"), s3=SKY),
        {SKY.id: (1, 0, 0, 6 / 7, 6 / 7, 1)},
        id="prediction-mostly-void-not-fp",
    ),
    pytest.param(
        # Exactly half in void is not "more than half": still a false positive.
        frame(grid("1111333333"), s1=PERSON, s3=SKY),
        frame(grid("..33333333"), s3=SKY),
        {PERSON.id: (0, 1, 0, 0, 0, 0), SKY.id: (1, 0, 0, 0.75, 0.75, 1)},
        id="prediction-half-void-is-fp",
    ),
    pytest.param(
        # Same pixels, other category: no match across categories.
        frame(grid("7777"), s7=CAR),
        frame(grid("2222"), s2=PERSON),
        {PERSON.id: (0, 0, 1, 0, 0, 0), CAR.id: (0, 1, 0, 0, 0, 0)},
        id="category-mismatch-is-fp-and-fn",
    ),
    pytest.param(
        # Segments listed without pixels (8 predicted, 9 ground truth) count for nothing.
        frame(grid("3333"), s3=SKY, s8=PERSON),
        frame(grid("3333"), s3=SKY, s9=CAR),
        {SKY.id: (1, 0, 0, 1, 1, 1)},
        id="listed-segments-without-pixels-ignored",
    ),
]


@pytest.mark.parametrize(("prediction", "ground_truth", "expected"), HAND_CASES)
def test_hand_computed(
    prediction: PanopticFrame, ground_truth: PanopticFrame, expected: dict[int, Stats]
) -> None:
    result = evaluate((prediction, ground_truth))

    for cat in result.per_category:
        if cat.category_id in expected:
            tp, fp, fn, pq, sq, rq = expected[cat.category_id]
            assert (cat.tp, cat.fp, cat.fn) == (tp, fp, fn), cat.name
            assert (cat.pq, cat.sq, cat.rq) == pytest.approx((pq, sq, rq)), cat.name
        else:
            assert (cat.tp, cat.fp, cat.fn, cat.pq, cat.sq, cat.rq) == (0, 0, 0, None, None, None)
    assert result.overall.n == len(expected)
    assert result.overall.pq == pytest.approx(
        sum(stats[3] for stats in expected.values()) / len(expected)
    )


def test_things_and_stuff_are_averaged_separately_and_absent_categories_left_out() -> None:
    # Person perfect (PQ 1), sky at IoU 0.6 (PQ 0.6); car, road and tree never occur.
    result = evaluate(
        (
            frame(grid("11333333...."), s1=PERSON, s3=SKY),
            frame(grid("113333333333"), s1=PERSON, s3=SKY),
        )
    )

    assert (result.things.pq, result.things.n) == (pytest.approx(1.0), 1)
    assert (result.stuff.pq, result.stuff.sq, result.stuff.n) == (
        pytest.approx(0.6),
        pytest.approx(0.6),
        1,
    )
    assert (result.overall.pq, result.overall.rq, result.overall.n) == (
        pytest.approx(0.8),
        pytest.approx(1.0),
        2,
    )
    assert [c.pq for c in result.per_category if c.category_id in {2, 4, 5}] == [None] * 3


def test_counts_are_summed_over_images_before_dividing() -> None:
    person = grid("11..")
    hit = (frame(person, s1=PERSON), frame(person, s1=PERSON))
    miss = (frame(grid("...."), s1=PERSON), frame(person, s1=PERSON))

    result = evaluate(hit, miss)

    # One TP and one FN in total gives RQ 2/3; a mean of per-image PQs would give 0.5.
    person_pq = by_id(result)[PERSON.id]
    assert (person_pq.tp, person_pq.fn, person_pq.pq) == (1, 1, pytest.approx(2 / 3))
    assert result.images == 2


def test_no_category_occurs_gives_none_means() -> None:
    empty = frame(grid("...."))
    result = evaluate((empty, empty))
    assert (result.overall.pq, result.overall.n) == (None, 0)
    assert (result.things.sq, result.stuff.rq) == (None, None)
    assert "-" in format_table(result).splitlines()[2]


def test_ids_need_not_agree_between_sides() -> None:
    gt = frame(grid("1122"), s1=PERSON, s2=SKY)
    pred = PanopticFrame(
        id_map=np.array([[70001, 70001, 5, 5]], dtype=np.uint32),
        segments={70001: PERSON.id, 5: SKY.id},
    )
    result = evaluate((pred, gt))
    assert result.overall.pq == pytest.approx(1.0)


ERROR_CASES = [
    pytest.param(
        lambda: evaluate((frame(grid("33")), frame(grid("3", "3")))),
        pytest.raises(ValueError, match=r"prediction shape \(1, 2\).*ground truth shape \(2, 1\)"),
        id="shapes-differ",
    ),
    pytest.param(
        lambda: evaluate((frame(grid("37"), s3=SKY), frame(grid("33"), s3=SKY))),
        pytest.raises(ValueError, match="prediction map holds segment ids 7 that no segment"),
        id="unlisted-prediction-id",
    ),
    pytest.param(
        lambda: evaluate((frame(grid("33"), s3=SKY), frame(grid("38"), s3=SKY))),
        pytest.raises(ValueError, match="ground truth map holds segment ids 8"),
        id="unlisted-ground-truth-id",
    ),
    pytest.param(
        lambda: evaluate(
            (
                PanopticFrame(id_map=grid("33"), segments={3: 99}),
                frame(grid("33"), s3=SKY),
            )
        ),
        pytest.raises(ValueError, match="prediction segment 3 has category id 99"),
        id="unknown-category-with-pixels",
    ),
    pytest.param(
        lambda: evaluate(
            (
                PanopticFrame(id_map=grid("33"), segments={3: SKY.id, 4: 99}),
                frame(grid("33"), s3=SKY),
            )
        ),
        nullcontext(),
        id="unknown-category-without-pixels-is-fine",
    ),
    pytest.param(
        lambda: evaluate(
            (
                PanopticFrame(id_map=np.array([[2**21, 3]], dtype=np.uint32), segments={3: 3}),
                frame(grid("33"), s3=SKY),
            )
        ),
        pytest.raises(ValueError, match=f"ids {2**21} that no segment"),
        id="unlisted-large-id",
    ),
    pytest.param(
        lambda: PQAccumulator([SKY, Category(id=SKY.id, name="other")]),
        pytest.raises(ValueError, match="category id 3 is listed twice"),
        id="duplicate-category",
    ),
    pytest.param(
        lambda: PanopticFrame(id_map=np.zeros((2, 2), dtype=np.int64), segments={}),
        pytest.raises(ValueError, match="uint32 numpy array, got int64"),
        id="wrong-dtype",
    ),
    pytest.param(
        lambda: PanopticFrame(id_map=np.zeros((2, 2, 3), dtype=np.uint32), segments={}),
        pytest.raises(ValueError, match=r"2-D.*\(2, 2, 3\)"),
        id="not-2d",
    ),
    pytest.param(
        lambda: PanopticFrame(id_map=grid("00"), segments={0: SKY.id}),
        pytest.raises(ValueError, match="got 0"),
        id="void-listed-as-segment",
    ),
]


@pytest.mark.parametrize(("call", "expectation"), ERROR_CASES)
def test_errors(call: Any, expectation: AbstractContextManager[Any]) -> None:
    with expectation:
        call()


def test_failed_add_adds_nothing() -> None:
    accumulator = PQAccumulator(CATEGORIES)
    with pytest.raises(ValueError):
        accumulator.add(frame(grid("37"), s3=SKY), frame(grid("33"), s3=SKY))
    result = accumulator.result()
    assert (result.images, result.overall.n) == (0, 0)


def test_frame_segments_are_a_read_only_copy() -> None:
    segments = {3: SKY.id}
    f = PanopticFrame(id_map=grid("33"), segments=segments)
    segments[4] = ROAD.id
    assert dict(f.segments) == {3: SKY.id}
    with pytest.raises(TypeError):
        f.segments[5] = 1  # type: ignore[index]


# --- panopticapi's definition, followed literally --------------------------------------------


def reference_pq(
    pairs: list[tuple[PanopticFrame, PanopticFrame]], categories: tuple[Category, ...]
) -> dict[str, Any]:
    """panopticapi ``pq_compute_single_core`` + ``pq_average``, one segment mask at a time.

    Two documented deviations are applied here too: areas are pixel counts on both sides, and
    segments listed without pixels are dropped. There is no crowd.
    """
    stats: dict[int, dict[str, float]] = defaultdict(
        lambda: {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0}
    )
    for pred, gt in pairs:
        gt_segms = {
            sid: {"category_id": cid, "area": int((gt.id_map == sid).sum())}
            for sid, cid in gt.segments.items()
        }
        gt_segms = {k: v for k, v in gt_segms.items() if v["area"] > 0}
        pred_segms = {
            sid: {"category_id": cid, "area": int((pred.id_map == sid).sum())}
            for sid, cid in pred.segments.items()
        }
        pred_segms = {k: v for k, v in pred_segms.items() if v["area"] > 0}

        gt_pred_map: dict[tuple[int, int], int] = {}
        for gt_label in [0, *gt_segms]:
            gt_mask = gt.id_map == gt_label
            for pred_label in [0, *pred_segms]:
                intersection = int((gt_mask & (pred.id_map == pred_label)).sum())
                if intersection:
                    gt_pred_map[(gt_label, pred_label)] = intersection

        gt_matched = set()
        pred_matched = set()
        for (gt_label, pred_label), intersection in gt_pred_map.items():
            if gt_label not in gt_segms or pred_label not in pred_segms:
                continue
            if gt_segms[gt_label]["category_id"] != pred_segms[pred_label]["category_id"]:
                continue
            union = (
                pred_segms[pred_label]["area"]
                + gt_segms[gt_label]["area"]
                - intersection
                - gt_pred_map.get((0, pred_label), 0)
            )
            iou = intersection / union
            if iou > 0.5:
                stats[gt_segms[gt_label]["category_id"]]["tp"] += 1
                stats[gt_segms[gt_label]["category_id"]]["iou"] += iou
                gt_matched.add(gt_label)
                pred_matched.add(pred_label)
        for gt_label, gt_info in gt_segms.items():
            if gt_label not in gt_matched:
                stats[gt_info["category_id"]]["fn"] += 1
        for pred_label, pred_info in pred_segms.items():
            if pred_label in pred_matched:
                continue
            if gt_pred_map.get((0, pred_label), 0) / pred_info["area"] > 0.5:
                continue
            stats[pred_info["category_id"]]["fp"] += 1

    def average(isthing: bool | None) -> dict[str, float]:
        pq = sq = rq = 0.0
        n = 0
        for cat in categories:
            if isthing is not None and cat.has_instances != isthing:
                continue
            s = stats[cat.id]
            if s["tp"] + s["fp"] + s["fn"] == 0:
                continue
            n += 1
            pq += s["iou"] / (s["tp"] + 0.5 * s["fp"] + 0.5 * s["fn"])
            sq += s["iou"] / s["tp"] if s["tp"] != 0 else 0
            rq += s["tp"] / (s["tp"] + 0.5 * s["fp"] + 0.5 * s["fn"])
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}

    return {
        "All": average(None),
        "Things": average(True),
        "Stuff": average(False),
        "counts": {
            c.id: (stats[c.id]["tp"], stats[c.id]["fp"], stats[c.id]["fn"]) for c in categories
        },
    }


def random_pair(
    rng: np.random.Generator, id_base: int = 1000
) -> tuple[PanopticFrame, PanopticFrame]:
    """A ground truth of random rectangles over a void-speckled background, and a prediction
    made from it by shifting, repainting, relabelling and renumbering: a mix of matches,
    near misses, tiny leftovers, false positives and void overlaps."""
    h, w = 24, 32
    categories = [c.id for c in CATEGORIES[:4]]

    def paint(id_map: npt.NDArray[np.uint32], segments: dict[int, int], seg_id: int) -> None:
        y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
        dy, dx = rng.integers(2, 13, size=2)
        id_map[y : y + dy, x : x + dx] = seg_id
        segments[seg_id] = int(rng.choice(categories))

    gt_map = np.zeros((h, w), dtype=np.uint32)
    gt_segments: dict[int, int] = {}
    for seg_id in range(1, int(rng.integers(4, 12))):
        paint(gt_map, gt_segments, seg_id)
    gt_map[rng.random((h, w)) < 0.05] = 0

    pred_map = np.roll(gt_map, tuple(rng.integers(-2, 3, size=2)), axis=(0, 1))
    pred_segments = dict(gt_segments)
    for seg_id in range(50, 50 + int(rng.integers(0, 4))):
        paint(pred_map, pred_segments, seg_id)
    for seg_id in list(pred_segments):
        if rng.random() < 0.2:
            pred_segments[seg_id] = int(rng.choice(categories))
    new_ids = rng.permutation(500)[: len(pred_segments)] + id_base
    renumber = dict(zip(pred_segments, new_ids, strict=True))
    lut = np.zeros(max(pred_segments) + 1, dtype=np.uint32)
    for old, new in renumber.items():
        lut[old] = new
    pred_map = lut[pred_map]
    pred_segments = {int(renumber[k]): v for k, v in pred_segments.items()}
    pred_segments[999] = categories[0]  # listed, no pixels
    return (
        PanopticFrame(id_map=pred_map, segments=pred_segments),
        PanopticFrame(id_map=gt_map, segments=gt_segments),
    )


RANDOM_CASES = [
    *(pytest.param(seed, 1000, True, id=f"seed-{seed}") for seed in range(6)),
    # Ids above the lookup-table limit take the binary-search path.
    pytest.param(6, 2**22, True, id="large-ids"),
    # Many segments: the (gt, pred) pairs are counted with np.unique instead of a dense matrix.
    pytest.param(7, 1000, False, id="sparse-pair-counts"),
]


@pytest.mark.parametrize(("seed", "id_base", "dense"), RANDOM_CASES)
def test_matches_panopticapi_definition_on_random_frames(
    seed: int, id_base: int, dense: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not dense:
        monkeypatch.setattr(evaluate_module, "_MAX_DENSE_PAIRS", 0)
    rng = np.random.default_rng(seed)
    pairs = [random_pair(rng, id_base) for _ in range(5)]

    expected = reference_pq(pairs, CATEGORIES)
    result = evaluate(*pairs)

    counts = {c.category_id: (c.tp, c.fp, c.fn) for c in result.per_category}
    assert counts == expected["counts"]
    for name, avg in (("All", result.overall), ("Things", result.things), ("Stuff", result.stuff)):
        ref = expected[name]
        assert avg.n == ref["n"], name
        assert (avg.pq, avg.sq, avg.rq) == pytest.approx(
            (ref["pq"], ref["sq"], ref["rq"]), rel=1e-12
        ), name
    # The case is only a test if it exercises every outcome.
    totals = np.array(list(counts.values())).sum(axis=0)
    assert (totals > 0).all(), totals


# --- COCO-panoptic exports -------------------------------------------------------------------

TAXONOMY = build_taxonomy(list(CATEGORIES), {}, PipelineSettings())


def prediction(
    id_map: npt.NDArray[np.uint32], categories: dict[int, Category]
) -> PanopticPrediction:
    segments = []
    for seg_id, cat in sorted(categories.items()):
        ys, xs = np.nonzero(id_map == seg_id)
        x0, y0 = int(xs.min()), int(ys.min())
        segments.append(
            Segment(
                id=seg_id,
                category_id=cat.id,
                is_thing=cat.has_instances,
                score=0.9,
                area=int(ys.size),
                bbox=(x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1),
            )
        )
    return PanopticPrediction(id_map=id_map, segments=tuple(segments))


GT_IMAGES = {
    "a.jpg": prediction(TWO_PERSONS, {1: PERSON, 2: PERSON, 3: SKY, 4: ROAD}),
    "sub/b.jpg": prediction(grid("3333333333"), {3: SKY}),
}
PRED_IMAGES = {
    # Ids differ from the ground truth's, and one needs the G and B bytes of the PNG.
    "sub/b.jpg": prediction(grid("333333....") * 70001, {210003: SKY}),
    "a.jpg": prediction(
        grid("333333", "311355", "311355", "444444"),
        {1: PERSON, 3: SKY, 4: ROAD, 5: CAR},
    ),
}


def write_export(
    out_dir: Path, images: dict[str, PanopticPrediction], name: str = "panoptic"
) -> Path:
    with CocoPanopticWriter(out_dir, TAXONOMY, name=name) as writer:
        for file_name, pred in images.items():
            writer.add(file_name, pred)
    return out_dir


@pytest.fixture
def exports(tmp_path: Path) -> tuple[Path, Path]:
    return (
        write_export(tmp_path / "pred", PRED_IMAGES),
        write_export(tmp_path / "gt", GT_IMAGES),
    )


def test_round_trip_equals_evaluating_the_frames(exports: tuple[Path, Path]) -> None:
    pred_dir, gt_dir = exports

    result = evaluate_coco_dirs(pred_dir, gt_dir)

    expected = evaluate(
        *(
            (frame_from_prediction(PRED_IMAGES[k]), frame_from_prediction(GT_IMAGES[k]))
            for k in GT_IMAGES
        )
    )
    assert result == expected
    # Person 2 was predicted as a car: person TP 1 FN 1, car FP 1; sky 10/10 then 6/10.
    stats = by_id(result)
    assert (stats[PERSON.id].tp, stats[PERSON.id].fn, stats[CAR.id].fp) == (1, 1, 1)
    assert stats[SKY.id].sq == pytest.approx((1 + 0.6) / 2)
    assert result.images == 2


def test_read_coco_panoptic_gives_the_written_frames(exports: tuple[Path, Path]) -> None:
    pred_dir, _ = exports
    frames = dict(read_coco_panoptic(pred_dir / "panoptic.json", pred_dir / "panoptic"))

    assert list(frames) == list(PRED_IMAGES)
    for key, pred in PRED_IMAGES.items():
        np.testing.assert_array_equal(frames[key].id_map, pred.id_map)
        assert dict(frames[key].segments) == {s.id: s.category_id for s in pred.segments}
    assert read_coco_categories(pred_dir / "panoptic.json") == tuple(
        Category(id=c.id, name=c.name, has_instances=c.has_instances) for c in CATEGORIES
    )


def test_layouts_accepted(exports: tuple[Path, Path]) -> None:
    pred_dir, gt_dir = exports
    (pred_dir / "report.json").write_text("{}")  # what predict also writes; not a candidate
    reference = evaluate_coco_dirs(pred_dir, gt_dir)

    for pred_path in (pred_dir / "panoptic.json", pred_dir / "panoptic"):
        assert evaluate_coco_dirs(pred_path, gt_dir) == reference
    files = locate_coco_panoptic(gt_dir / "panoptic")
    assert (files.json_path, files.png_dir) == (gt_dir / "panoptic.json", gt_dir / "panoptic")


def test_progress_counts_images(exports: tuple[Path, Path]) -> None:
    import io

    stream = io.StringIO()
    evaluate_coco_dirs(*exports, progress=TqdmProgress(file=stream, min_total=0))
    assert "2/2" in stream.getvalue()


def test_image_ids_used_when_images_are_not_listed(tmp_path: Path) -> None:
    out = write_export(tmp_path / "e", {"x.jpg": GT_IMAGES["sub/b.jpg"]})
    document = json.loads((out / "panoptic.json").read_text())
    del document["images"]
    (out / "panoptic.json").write_text(json.dumps(document))

    keys = [k for k, _ in read_coco_panoptic(out / "panoptic.json", out / "panoptic")]
    assert keys == ["1"]


def break_json(path: Path, edit: Any) -> None:
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


BAD_INPUT_CASES = [
    pytest.param(
        lambda pred, gt: (gt / "panoptic.json").write_text("{not json"),
        r"gt/panoptic.json: not valid JSON",
        id="unreadable-json",
    ),
    pytest.param(
        lambda pred, gt: break_json(gt / "panoptic.json", lambda d: d.pop("annotations")),
        r"no 'annotations' list",
        id="no-annotations",
    ),
    pytest.param(
        lambda pred, gt: break_json(
            gt / "panoptic.json", lambda d: d["categories"][0].pop("isthing")
        ),
        r"categories\[0\] lacks id, name or isthing",
        id="category-without-isthing",
    ),
    pytest.param(
        lambda pred, gt: break_json(gt / "panoptic.json", lambda d: d["annotations"].pop()),
        r"1 predicted images have no ground truth: 'sub/b.jpg'",
        id="prediction-without-ground-truth",
    ),
    pytest.param(
        lambda pred, gt: break_json(pred / "panoptic.json", lambda d: d["annotations"].pop()),
        r"1 ground-truth images have no prediction: 'a.jpg'",
        id="ground-truth-without-prediction",
    ),
    pytest.param(
        lambda pred, gt: (pred / "panoptic" / "a.png").unlink(),
        r"pred/panoptic/a.png: the panoptic PNG is missing",
        id="png-missing",
    ),
    pytest.param(
        lambda pred, gt: Image.new("L", (6, 4)).save(pred / "panoptic" / "a.png"),
        r"must be RGB or RGBA, not L",
        id="png-not-rgb",
    ),
    pytest.param(
        lambda pred, gt: Image.new("RGB", (5, 4)).save(pred / "panoptic" / "a.png"),
        r"image 'a.jpg': prediction shape \(4, 5\) differs",
        id="sizes-differ",
    ),
    pytest.param(
        lambda pred, gt: break_json(
            gt / "panoptic.json",
            lambda d: d["categories"].pop(1),  # car: predicted in a.jpg
        ),
        r"image 'a.jpg': prediction segment 5 has category id 2",
        id="predicted-category-unknown-to-ground-truth",
    ),
    pytest.param(
        lambda pred, gt: (pred / "panoptic.json").rename(pred / "other.json"),
        r"pred: no COCO-panoptic export found",
        id="no-export-in-folder",
    ),
    pytest.param(
        lambda pred, gt: (pred / "extra").mkdir() or (pred / "extra.json").write_text("{}"),
        r"several COCO-panoptic exports \(extra.json, panoptic.json\)",
        id="several-exports",
    ),
]


@pytest.mark.parametrize(("damage", "message"), BAD_INPUT_CASES)
def test_bad_input_is_a_config_error(exports: tuple[Path, Path], damage: Any, message: str) -> None:
    pred_dir, gt_dir = exports
    damage(pred_dir, gt_dir)
    with pytest.raises(ConfigError, match=message):
        evaluate_coco_dirs(pred_dir, gt_dir)


def test_missing_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file or folder"):
        locate_coco_panoptic(tmp_path / "nope")


def test_as_dict_is_json_ready_and_complete(exports: tuple[Path, Path]) -> None:
    result = evaluate_coco_dirs(*exports)
    document = json.loads(json.dumps(result.as_dict()))

    assert document["images"] == 2
    assert document["overall"]["n"] == result.overall.n
    assert math.isclose(document["overall"]["pq"], result.overall.pq or -1)
    assert [c["name"] for c in document["per_category"]] == [c.name for c in CATEGORIES]
    tree = document["per_category"][-1]
    assert (tree["pq"], tree["tp"], tree["isthing"]) == (None, 0, False)


def test_table_lists_categories_then_means(exports: tuple[Path, Path]) -> None:
    table = format_table(evaluate_coco_dirs(*exports)).splitlines()
    names = [line.split()[0] for line in table[2:7]]
    assert names == [c.name for c in CATEGORIES]
    assert [line.split()[0] for line in table[8:11]] == ["All", "Things", "Stuff"]
    person = table[2].split()
    assert person[1:] == ["thing", "66.7", "100.0", "66.7", "1", "0", "1"]
