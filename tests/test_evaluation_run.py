"""Evaluating the pipeline on a dataset's human labels, against the emulator with tiny models.

The "human" labels are built from what the tiny pipeline predicts for the same image, so every
expected number is known exactly: a label equal to the prediction scores PQ 1, and each
deliberate change (a segment given another category, a segment erased) moves TP, FP and FN by
a known amount. Expectations are computed from the prediction rather than hard-coded, so they
hold whatever the tiny models happen to find; preconditions are asserted where a test needs a
minimum number of segments.
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from prelabel.config import CategoryOptions
from prelabel.emulator import Emulator, FaultRule
from prelabel.errors import RemoteError
from prelabel.evaluate.dataset import (
    DatasetEvaluation,
    Predictor,
    evaluate_dataset,
    evaluated_categories,
    ground_truth_frame,
)
from prelabel.formats.bitmap import decode_bitmap, segmentation_png
from prelabel.images import decode_image
from prelabel.panoptic import PanopticPrediction
from prelabel.segments.client import SegmentsApi
from prelabel.taxonomy import Taxonomy, build_taxonomy, categories_from_task_attributes
from tests.connector_helpers import LABELING_PIPELINE, remote_settings, requests_matching
from tests.fixtures.emulator import DEMO_CATEGORIES, EMULATOR_API_KEY, png_bytes

if TYPE_CHECKING:
    pass

DATASET = "jane/eval"
#: 48x32 images give the tiny models three segments each (seeds 1-3: a person and two cars).
SIZE = (48, 32)
SKY = 3
ROAD = 4


# Helpers, also used by tests/test_cli_evaluate.py ----------------------------------------------


def demo_taxonomy(ignore: tuple[str, ...] = ()) -> Taxonomy:
    categories = categories_from_task_attributes({"categories": list(DEMO_CATEGORIES)})
    options = {name: CategoryOptions(ignore=True) for name in ignore}
    return build_taxonomy(categories, options, LABELING_PIPELINE)


def predict_image(pipeline: Predictor, taxonomy: Taxonomy, image: bytes) -> PanopticPrediction:
    return pipeline.predict(decode_image(image, max_pixels=10**8), taxonomy)


@dataclass(frozen=True)
class Labeled:
    """A sample and the prediction its human label was built from."""

    uuid: str
    name: str
    prediction: PanopticPrediction


def add_sample(emulator: Emulator, name: str, image: bytes, dataset: str = DATASET) -> str:
    return emulator.add_image_sample(dataset, name, emulator.add_asset(image, name))


def write_human_label(
    emulator: Emulator,
    uuid: str,
    id_map: npt.NDArray[np.uint32],
    annotations: Mapping[int, int],
    *,
    status: str = "LABELED",
) -> None:
    """Store a bitmap and annotations as a person's label with ``status``."""
    url = emulator.add_asset(segmentation_png(id_map), f"human-{uuid}.png")
    emulator.write_label(
        uuid, "ground-truth", label_attributes(url, annotations), label_status=status
    )


def label_attributes(url: str, annotations: Mapping[int, int]) -> dict[str, Any]:
    return {
        "format_version": "0.1",
        "annotations": [{"id": i, "category_id": c} for i, c in annotations.items()],
        "segmentation_bitmap": {"url": url},
    }


def as_label(prediction: PanopticPrediction) -> tuple[npt.NDArray[np.uint32], dict[int, int]]:
    """A prediction's bitmap and annotations, copied so a test can edit them."""
    return prediction.id_map.copy(), {s.id: s.category_id for s in prediction.segments}


def add_labeled_sample(
    emulator: Emulator,
    pipeline: Predictor,
    taxonomy: Taxonomy,
    name: str,
    seed: int,
    *,
    status: str = "LABELED",
) -> Labeled:
    """A sample whose human label is exactly what the pipeline predicts for it."""
    image = png_bytes(*SIZE, seed=seed)
    uuid = add_sample(emulator, name, image)
    prediction = predict_image(pipeline, taxonomy, image)
    write_human_label(emulator, uuid, *as_label(prediction), status=status)
    return Labeled(uuid, name, prediction)


def rgba_png(rgba: npt.NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, format="PNG")
    return buffer.getvalue()


def per_category(evaluation: DatasetEvaluation) -> dict[str, tuple[int, int, int]]:
    return {c.name: (c.tp, c.fp, c.fn) for c in evaluation.result.per_category}


def segment_counts(*predictions: PanopticPrediction) -> Counter[int]:
    return Counter(s.category_id for p in predictions for s in p.segments)


# Fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def taxonomy() -> Taxonomy:
    return demo_taxonomy()


@pytest.fixture
def api(emulator: Emulator) -> Iterator[SegmentsApi]:
    emulator.create_dataset(DATASET, categories=list(DEMO_CATEGORIES))
    client = SegmentsApi.connect(EMULATOR_API_KEY, remote_settings(emulator.url))
    yield client
    client.close()


def run_evaluation(
    api: SegmentsApi, pipeline: Predictor, taxonomy: Taxonomy, **kwargs: Any
) -> DatasetEvaluation:
    return evaluate_dataset(api, pipeline, taxonomy, dataset=DATASET, **kwargs)


def label_reads(emulator: Emulator) -> list[str]:
    """Sample uuids whose label was read, in order."""
    return [r.path.split("/")[2] for r in requests_matching(emulator, "GET", "/labels/")]


# Scores ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_label_equal_to_the_prediction_scores_1(
    emulator: Emulator, api: SegmentsApi, pipeline: Predictor, taxonomy: Taxonomy
) -> None:
    sample = add_labeled_sample(emulator, pipeline, taxonomy, "a.png", seed=1)
    counts = segment_counts(sample.prediction)
    assert counts, "the tiny pipeline must find something for this test to mean anything"

    evaluation = run_evaluation(api, pipeline, taxonomy)

    result = evaluation.result
    assert result.images == 1 and evaluation.failures == ()
    for cat in result.per_category:
        if cat.category_id in counts:
            assert (cat.pq, cat.sq, cat.rq) == (1.0, 1.0, 1.0), cat
            assert (cat.tp, cat.fp, cat.fn) == (counts[cat.category_id], 0, 0)
        else:
            assert (cat.pq, cat.tp, cat.fp, cat.fn) == (None, 0, 0, 0), cat
    assert result.overall.pq == 1.0 and result.overall.n == len(counts)


@pytest.mark.slow
def test_changed_labels_give_the_exact_tp_fp_fn(
    emulator: Emulator, api: SegmentsApi, pipeline: Predictor, taxonomy: Taxonomy
) -> None:
    exact = add_labeled_sample(emulator, pipeline, taxonomy, "a-exact.png", seed=1)
    # b: one predicted segment labeled "sky" by the person -> an FP of its category, an FN of sky.
    image_b = png_bytes(*SIZE, seed=2)
    relabeled_uuid = add_sample(emulator, "b-relabeled.png", image_b)
    relabeled = predict_image(pipeline, taxonomy, image_b)
    id_map, annotations = as_label(relabeled)
    changed = relabeled.segments[0]
    annotations[changed.id] = SKY
    write_human_label(emulator, relabeled_uuid, id_map, annotations)
    # c: one segment erased (pixels unlabeled, annotation gone) -> one TP fewer, and no FP,
    # because a prediction lying wholly in unlabeled pixels cannot be judged.
    image_c = png_bytes(*SIZE, seed=3)
    erased_uuid = add_sample(emulator, "c-erased.png", image_c)
    erased_pred = predict_image(pipeline, taxonomy, image_c)
    id_map, annotations = as_label(erased_pred)
    erased = erased_pred.segments[-1]
    id_map[id_map == erased.id] = 0
    del annotations[erased.id]
    write_human_label(emulator, erased_uuid, id_map, annotations)
    assert SKY not in segment_counts(exact.prediction, relabeled, erased_pred)

    evaluation = run_evaluation(api, pipeline, taxonomy)

    tp = segment_counts(exact.prediction, relabeled, erased_pred)
    tp[changed.category_id] -= 1
    tp[erased.category_id] -= 1
    fp = Counter({changed.category_id: 1})
    fn = Counter({SKY: 1})
    assert evaluation.result.images == 3 and evaluation.failures == ()
    for cat in evaluation.result.per_category:
        expected = (tp[cat.category_id], fp[cat.category_id], fn[cat.category_id])
        assert (cat.tp, cat.fp, cat.fn) == expected, cat.name
        if sum(expected):
            # Matched segments are pixel-identical: SQ is 1 and PQ = RQ.
            assert cat.sq == (1.0 if cat.tp else 0.0)
            assert cat.pq == pytest.approx(cat.tp / (cat.tp + cat.fp / 2 + cat.fn / 2))
    stuff = evaluation.result.stuff
    assert (stuff.pq, stuff.n) == (0.0, 1)  # sky: labeled once, never predicted


@pytest.mark.slow
def test_unevaluated_categories_and_unannotated_ids_become_unlabeled(
    emulator: Emulator, api: SegmentsApi, pipeline: Predictor
) -> None:
    taxonomy = demo_taxonomy(ignore=("road",))
    exact = add_labeled_sample(emulator, pipeline, taxonomy, "a.png", seed=1)
    image = png_bytes(*SIZE, seed=2)
    uuid = add_sample(emulator, "b.png", image)
    prediction = predict_image(pipeline, taxonomy, image)
    assert len(prediction.segments) >= 3
    id_map, annotations = as_label(prediction)
    to_road, to_unknown, unannotated = prediction.segments[:3]
    annotations[to_road.id] = ROAD  # ignored by the config
    annotations[to_unknown.id] = 99  # a category the dataset does not define
    del annotations[unannotated.id]  # pixels whose id has no annotation
    annotations[500] = 1  # an annotation without pixels: nothing to match, no FN
    write_human_label(emulator, uuid, id_map, annotations)

    evaluation = run_evaluation(api, pipeline, taxonomy)

    assert evaluation.failures == () and evaluation.result.images == 2
    assert "road" not in {c.name for c in evaluation.result.per_category}
    assert [c.name for c in evaluated_categories(taxonomy)] == ["person", "car", "sky"]
    tp = segment_counts(exact.prediction, prediction)
    for seg in (to_road, to_unknown, unannotated):
        tp[seg.category_id] -= 1
    assert per_category(evaluation) == {
        c.name: (tp[c.id], 0, 0) for c in evaluated_categories(taxonomy)
    }
    assert evaluation.voided_segments == 2
    assert evaluation.unannotated_pixels == int(np.sum(id_map == unannotated.id))


# Which samples ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_only_finished_human_labels_are_evaluated_and_nothing_is_written(
    emulator: Emulator, api: SegmentsApi, pipeline: Predictor, taxonomy: Taxonomy
) -> None:
    image = png_bytes(*SIZE, seed=1)
    prediction = predict_image(pipeline, taxonomy, image)
    url = emulator.add_asset(segmentation_png(prediction.id_map), "human.png")
    attributes = label_attributes(url, as_label(prediction)[1])
    statuses = [
        "PRELABELED",
        "LABELED",
        None,
        "LABELING_IN_PROGRESS",
        "REVIEWED",
        "REVIEWING_IN_PROGRESS",
        "REJECTED",
        "SKIPPED",
        "VERIFIED",
    ]
    uuids = {}
    for index, status in enumerate(statuses):
        uuid = add_sample(emulator, f"{index}.png", image)
        uuids[status] = uuid
        if status is not None:
            emulator.write_label(uuid, "ground-truth", attributes, label_status=status)
    uploads_before = emulator.asset_upload_count()
    emulator.clear_requests()

    evaluation = run_evaluation(api, pipeline, taxonomy)

    assert label_reads(emulator) == [uuids["LABELED"], uuids["REVIEWED"], uuids["VERIFIED"]]
    assert evaluation.result.images == 3 and evaluation.not_human_labeled == 6
    assert evaluation.result.overall.pq == 1.0
    counts = segment_counts(prediction)
    assert {c.category_id: c.tp for c in evaluation.result.per_category if c.tp} == {
        cid: 3 * n for cid, n in counts.items()
    }
    assert {r.method for r in emulator.requests} == {"GET"}
    assert emulator.label_write_counts() == {}
    assert emulator.asset_upload_count() == uploads_before


@pytest.mark.slow
def test_limit_counts_human_labeled_samples_only(
    emulator: Emulator, api: SegmentsApi, pipeline: Predictor, taxonomy: Taxonomy
) -> None:
    image = png_bytes(*SIZE, seed=1)
    id_map, annotations = as_label(predict_image(pipeline, taxonomy, image))
    uuids = []
    for name, status in [("a", "PRELABELED"), ("b", "LABELED"), ("c", "LABELED"), ("d", "LABELED")]:
        uuids.append(add_sample(emulator, f"{name}.png", image))
        write_human_label(emulator, uuids[-1], id_map, annotations, status=status)
    emulator.clear_requests()

    evaluation = run_evaluation(api, pipeline, taxonomy, limit=2)

    assert evaluation.result.images == 2
    assert label_reads(emulator) == uuids[1:3]


# Per-sample failures --------------------------------------------------------------------------


@pytest.mark.slow
def test_bad_samples_are_reported_by_name_and_the_rest_is_evaluated(
    emulator: Emulator,
    api: SegmentsApi,
    pipeline: Predictor,
    taxonomy: Taxonomy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    width, height = SIZE
    good_bitmap = segmentation_png(np.ones((height, width), dtype=np.uint32))
    good_url = emulator.add_asset(good_bitmap, "ok.png")
    one_segment = {1: 1}

    def sample_with(name: str, bitmap_url: str | None, image: bytes | None = None) -> None:
        uuid = add_sample(emulator, name, image or png_bytes(*SIZE, seed=1))
        if bitmap_url is None:  # the annotator only set a status
            emulator.set_label_status(uuid, "ground-truth", "LABELED")
        else:
            attributes = label_attributes(bitmap_url, one_segment)
            emulator.write_label(uuid, "ground-truth", attributes, label_status="LABELED")

    missing = good_url.rsplit("/", 1)[0] + "/no-such-asset.png"
    rgb = rgba_png(np.zeros((height, width, 3), dtype=np.uint8))
    small = segmentation_png(np.ones((height - 1, width), dtype=np.uint32))
    sample_with("missing-bitmap.png", missing)
    sample_with("rgb-bitmap.png", emulator.add_asset(rgb, "rgb.png"))
    sample_with("small-bitmap.png", emulator.add_asset(small, "small.png"))
    sample_with("no-bitmap.png", None)
    sample_with("broken-image.png", good_url, image=b"not an image")
    good = add_labeled_sample(emulator, pipeline, taxonomy, "good.png", seed=1)

    with caplog.at_level(logging.ERROR, logger="prelabel.run.policy"):
        evaluation = run_evaluation(api, pipeline, taxonomy)

    reasons = {f.sample_name: f.reason for f in evaluation.failures}
    assert list(reasons) == [
        "missing-bitmap.png",
        "rgb-bitmap.png",
        "small-bitmap.png",
        "no-bitmap.png",
        "broken-image.png",
    ]
    assert "label bitmap download failed" in reasons["missing-bitmap.png"]
    assert "404" in reasons["missing-bitmap.png"]
    assert "4-channel RGBA" in reasons["rgb-bitmap.png"]
    assert f"{width}x{height - 1} but the image is {width}x{height}" in reasons["small-bitmap.png"]
    assert reasons["no-bitmap.png"] == "the label has no segmentation bitmap"
    assert "not a recognised image format" in reasons["broken-image.png"]
    for name, reason in reasons.items():
        assert any(name in r.getMessage() and reason in r.getMessage() for r in caplog.records)
    assert evaluation.result.images == 1
    assert evaluation.result.overall.pq == 1.0
    assert sum(c.tp for c in evaluation.result.per_category) == len(good.prediction.segments)
    meta = evaluation.as_meta()
    assert meta["samples"] == {"evaluated": 1, "failed": 5, "not_human_labeled": 0}
    assert [f["sample_name"] for f in meta["failures"]] == list(reasons)


def test_a_server_failing_sample_after_sample_stops_the_evaluation(
    emulator: Emulator, api: SegmentsApi, taxonomy: Taxonomy
) -> None:
    for index in range(5):
        uuid = add_sample(emulator, f"{index}.png", png_bytes(*SIZE, seed=index))
        emulator.set_label_status(uuid, "ground-truth", "LABELED")
    emulator.set_faults([FaultRule(path="/labels/*", error_rate=1.0)])

    class NeverCalled:
        def predict(self, image: Image.Image, taxonomy: Taxonomy) -> PanopticPrediction:
            raise AssertionError("no sample should reach the model")

    with pytest.raises(RemoteError, match="3 samples in a row failed to reach the server"):
        run_evaluation(api, NeverCalled(), taxonomy)


# Pieces ---------------------------------------------------------------------------------------


def test_decode_bitmap_reads_ids_from_rgb_bytes() -> None:
    ids = np.array([[0, 1, 70000], [255, 256, 2**24 - 1]], dtype=np.uint32)
    png = segmentation_png(ids)

    assert np.array_equal(decode_bitmap(png, (3, 2)), ids)
    rgba = np.asarray(Image.open(io.BytesIO(png)))
    assert tuple(rgba[0, 2]) == (112, 17, 1, 255)  # shared/segments-api.md section 5


def test_decode_bitmap_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="cannot be read"):
        decode_bitmap(b"garbage", (3, 2))


def test_ground_truth_frame_voids_what_is_not_evaluated() -> None:
    id_map = np.array([[1, 2, 3], [4, 0, 1]], dtype=np.uint32)
    annotations = {1: 1, 2: 4, 3: 99, 7: 1}  # 4 has no annotation; 7 has no pixels

    frame, voided, unannotated = ground_truth_frame(id_map, annotations, {1, 2})

    assert frame.id_map.dtype == np.uint32
    assert frame.id_map.tolist() == [[1, 0, 0], [0, 0, 1]]
    assert dict(frame.segments) == {1: 1, 7: 1}
    assert (voided, unannotated) == (2, 1)


def test_label_bitmap_reads_annotations_and_url(emulator: Emulator, api: SegmentsApi) -> None:
    uuid = add_sample(emulator, "a.png", png_bytes(*SIZE, seed=0))
    assert api.label_bitmap(uuid, "ground-truth") is None

    emulator.set_label_status(uuid, "ground-truth", "LABELED")
    assert api.label_bitmap(uuid, "ground-truth") == ({}, None)

    url = emulator.add_asset(segmentation_png(np.ones((2, 2), dtype=np.uint32)), "l.png")
    emulator.write_label(uuid, "ground-truth", label_attributes(url, {1: 2, 5: 3}))
    assert api.label_bitmap(uuid, "ground-truth") == ({1: 2, 5: 3}, url)
    assert {r.method for r in emulator.requests if r.path.startswith("/labels/")} == {"GET"}
