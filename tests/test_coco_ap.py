"""COCO-style AP of boxes and polygons (prelabel.evaluate.coco_ap), against hand-computed
answers (101-point interpolated precision, IoU thresholds 0.50:0.05:0.95)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from prelabel.evaluate.coco_ap import ScoredShape, VectorImage, coco_ap

#: Category 1: a perfect box (score 0.9) and one of IoU 0.625 (score 0.8: a match at IoU
#: thresholds 0.50, 0.55 and 0.60 only); category 2: one miss, one false positive elsewhere.
#: Per category 1 threshold: both found -> AP 1; only the first -> precision 1 up to recall
#: 0.5 and nothing beyond -> 51 of 101 recall points -> 51/101.
CAT1_AP = (3 * 1.0 + 7 * 51 / 101) / 10


def box(category: int, x0: float, y0: float, x1: float, y1: float) -> dict[str, object]:
    return {"category_id": category, "type": "bbox", "points": [[x0, y0], [x1, y1]]}


def polygon(category: int, x0: float, y0: float, x1: float, y1: float) -> dict[str, object]:
    points = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
    return {"category_id": category, "type": "polygon", "points": points}


Shape = Callable[[int, float, float, float, float], dict[str, object]]


def scene(make: Shape) -> list[VectorImage]:
    """One 400 x 400 image of the case above, drawn with ``make`` (box or polygon)."""
    return [
        VectorImage(
            width=400,
            height=400,
            truth=[make(1, 0, 0, 100, 100), make(1, 200, 0, 300, 100), make(2, 0, 200, 100, 300)],
            predicted=[
                ScoredShape(make(1, 0, 0, 100, 100), 0.9),
                ScoredShape(make(1, 200, 0, 300, 160), 0.8),  # IoU 100*100 / 100*160
                ScoredShape(make(2, 250, 250, 350, 350), 0.7),  # overlaps nothing
            ],
        )
    ]


@pytest.mark.parametrize(("kind", "make"), [("bbox", box), ("polygon", polygon)])
def test_ap_ap50_ap75_and_per_category_match_the_hand_computed_answer(
    kind: str, make: Shape
) -> None:
    result = coco_ap(scene(make), kind, [1, 2])

    # Polygon IoU is computed on rasterised masks: within a few thousandths.
    tolerance = 1e-6 if kind == "bbox" else 5e-3
    assert result.per_category[1] == pytest.approx(CAT1_AP, abs=tolerance)
    assert result.per_category[2] == 0.0
    assert result.ap == pytest.approx(CAT1_AP / 2, abs=tolerance)
    assert result.ap50 == pytest.approx(0.5, abs=tolerance)
    assert result.ap75 == pytest.approx(51 / 101 / 2, abs=tolerance)
    assert result.images == 1


def test_perfect_predictions_score_1_and_other_types_are_ignored() -> None:
    truth = [box(1, 10, 10, 50, 60), polygon(1, 0, 0, 5, 5)]
    image = VectorImage(100, 100, truth, [ScoredShape(box(1, 10, 10, 50, 60), 0.5)])
    result = coco_ap([image], "bbox", [1])
    assert result.ap == pytest.approx(1.0)
    assert result.as_dict()["per_category"] == {"1": pytest.approx(1.0)}


def test_nothing_to_measure_is_nan_not_zero() -> None:
    result = coco_ap([VectorImage(10, 10, [])], "bbox", [1])
    assert math.isnan(result.ap) and math.isnan(result.per_category[1])
    with pytest.raises(ValueError, match="bbox or polygon"):
        coco_ap([], "point", [1])
