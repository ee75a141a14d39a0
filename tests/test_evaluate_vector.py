"""Evaluating on a ``bboxes`` dataset's human labels: COCO-style AP through the run's steps
(emulator, real SDK, the stand-in models whose boxes are the drawn rectangles)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from prelabel.config import PipelineSettings, Settings
from prelabel.emulator import Emulator
from prelabel.evaluate.vector_dataset import evaluate_vector_dataset
from prelabel.pipeline.pipeline import Pipeline
from prelabel.segments.client import SegmentsApi
from prelabel.segments.dataset import check_dataset
from tests.connector_helpers import remote_settings
from tests.fixtures.emulator import EMULATOR_API_KEY
from tests.test_run_vector import CATEGORY_IDS, SCENES, SIZE, seed

pytestmark = pytest.mark.slow


def human_boxes(index: int) -> list[dict[str, object]]:
    """A person's boxes of scene ``index``: exactly the drawn rectangles."""
    return [
        {"id": n, "category_id": CATEGORY_IDS[name], "type": "bbox", "points": [[x0, y0], [x1, y1]]}
        for n, (name, x0, y0, x1, y1) in enumerate(SCENES[index].rectangles(SIZE), start=1)
    ]


def test_ap_against_a_persons_boxes(
    emulator: Emulator, tmp_path: Path, standin_pipeline: Pipeline
) -> None:
    uuids = seed(emulator, "bboxes")
    emulator.write_label(uuids[0], "ground-truth", {"annotations": human_boxes(0)})
    # Scene 1: the person also boxed a second person the model cannot see (nothing drawn).
    missed = {"id": 9, "category_id": 1, "type": "bbox", "points": [[0, 0], [30, 30]]}
    label = {"annotations": [*human_boxes(1), missed]}
    emulator.write_label(uuids[1], "ground-truth", label, label_status="REVIEWED")
    # Scene 2 has no human label: not evaluated.
    settings = Settings(pipeline=PipelineSettings(), remote=remote_settings(emulator.url))
    api = SegmentsApi.connect(EMULATOR_API_KEY, settings.remote)
    try:
        info, taxonomy = check_dataset(api, settings, "jane/bboxes", "ground-truth", vectors=True)
        evaluation = evaluate_vector_dataset(
            api, standin_pipeline, taxonomy, info, settings=settings
        )
    finally:
        api.close()

    assert evaluation.kind == "bbox" and evaluation.evaluated == 2
    assert evaluation.not_human_labeled == 1 and evaluation.failures == ()
    result = evaluation.result
    # Car: one box, found. Person: 2 of 3 found, nothing wrong -> precision 1 up to recall
    # 2/3: 67 of COCO's 101 recall points.
    assert result.per_category[CATEGORY_IDS["car"]] == pytest.approx(1.0, abs=0.02)
    assert result.ap50 == pytest.approx((67 / 101 + 1.0) / 2)
    assert result.ap <= result.ap50
    # Stuff gets no boxes and has none to find: not measured, not a zero.
    assert math.isnan(result.per_category[CATEGORY_IDS["sky"]])
    assert emulator.label_write_counts() == {}  # read-only
