"""``prelabel run`` on ``bboxes`` and ``vector`` datasets: emulator, real SDK, stand-in models.

The deterministic stand-ins of ``tests/fixtures/standins.py`` see coloured rectangles, so the
boxes and polygons a run writes have known answers (within a pixel). Every label read back is
checked against shared/segments-api.md 12.2: PRELABELED, a dataset category, ``bbox`` exactly
two ordered corners inside the image, a polygon a ring of >= 3 points whose first point is not
repeated. The SDK's own ``coco-instance`` export must take the labeled dataset.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from segments import SegmentsClient, SegmentsDataset
from segments.typing import ImageVectorLabelAttributes
from segments.utils import export_dataset

from prelabel.config import PipelineSettings, Settings, VectorSettings
from prelabel.emulator import Emulator, FaultRule
from prelabel.errors import ConfigError
from prelabel.pipeline.pipeline import Pipeline
from prelabel.run.dataset import run_dataset
from prelabel.run.job import RunOptions
from prelabel.run.report import RunSummary
from prelabel.segments.client import SegmentsApi
from prelabel.segments.dataset import check_dataset
from prelabel.segments.upload import NO_ASSET, PendingLabel, write_label
from prelabel.state import StateStore
from tests.connector_helpers import make_settings, read_report, remote_settings
from tests.fixtures.emulator import EMULATOR_API_KEY
from tests.fixtures.standins import (
    Scene,
    draw_scene,
)

GT = "ground-truth"
SIZE = (256, 192)
CATEGORIES: list[dict[str, Any]] = [
    {"id": 1, "name": "person", "has_instances": True, "color": [220, 20, 60]},
    {
        "id": 2,
        "name": "car",
        "has_instances": True,
        "color": [0, 0, 142],
        "attributes": [{"name": "confidence", "input_type": "number", "min": 0, "max": 1}],
    },
    {"id": 3, "name": "sky", "has_instances": False, "color": [70, 130, 180]},
    {"id": 4, "name": "road", "has_instances": False, "color": [128, 64, 128]},
]
CATEGORY_IDS = {c["name"]: c["id"] for c in CATEGORIES}
SCENES = [
    Scene(
        bands=(("sky", 0.0, 0.4), ("road", 0.65, 1.0)),
        things=(("person", 0.12, 0.25, 0.28, 0.6), ("car", 0.6, 0.55, 0.88, 0.85)),
    ),
    Scene(bands=(("road", 0.7, 1.0),), things=(("person", 0.4, 0.3, 0.55, 0.8),)),
    Scene(bands=(("sky", 0.0, 0.5),), things=()),
]


def seed(emulator: Emulator, task_type: str) -> list[str]:
    """``jane/<task_type>``, one sample per scene (PNG of :data:`SIZE`)."""
    dataset = f"jane/{task_type}"
    emulator.create_dataset(dataset, task_type=task_type, categories=CATEGORIES)
    uuids = []
    for index, scene in enumerate(SCENES):
        buffer = io.BytesIO()
        draw_scene(scene, SIZE).save(buffer, format="PNG")
        url = emulator.add_asset(buffer.getvalue(), f"scene{index}.png")
        uuids.append(emulator.add_image_sample(dataset, f"scene{index}.png", url))
    return uuids


def run(
    emulator: Emulator,
    tmp_path: Path,
    pipeline: Pipeline,
    task_type: str,
    vector: VectorSettings | None = None,
    **options: Any,
) -> tuple[RunSummary, dict[str, Any]]:
    """One ``prelabel run`` (minus the CLI) with the stand-in pipeline; summary and report."""
    # The default gates: the stand-in's distractor boxes must be dropped, as in production.
    settings = make_settings(emulator.url, pipeline=PipelineSettings()).model_copy(
        update={"vector": vector or VectorSettings()}
    )
    state = StateStore.in_dir(tmp_path / "state")
    out = tmp_path / "out"
    try:
        summary = run_dataset(
            EMULATOR_API_KEY,
            settings,
            RunOptions(dataset=f"jane/{task_type}", output_dir=out, **options),
            state=state,
            load_pipeline=lambda: pipeline,
        )
    finally:
        state.close()
    return summary, read_report(out / "report.json")


def valid_annotations(
    client: SegmentsClient, uuid: str, kind: str, size: tuple[int, int] = SIZE
) -> list[dict[str, Any]]:
    """The label of ``uuid`` obeys section 12.2 for ``kind``; returns its annotations."""
    label = client.get_label(uuid, labelset=GT)
    assert str(getattr(label.label_status, "value", label.label_status)) == "PRELABELED"
    assert label.score is not None and 0.0 <= label.score <= 1.0
    attributes = ImageVectorLabelAttributes.model_validate(label.attributes.model_dump())
    annotations = [a.model_dump() for a in attributes.annotations]
    width, height = size
    ids = [a["id"] for a in annotations]
    assert len(set(ids)) == len(ids) and all(i >= 1 for i in ids)
    for a in annotations:
        assert a["type"] == kind
        assert a["category_id"] in CATEGORY_IDS.values()
        points = np.array(a["points"], dtype=float)
        assert points.ndim == 2 and points.shape[1] == 2 and np.isfinite(points).all()
        assert (points >= 0).all() and (points[:, 0] <= width).all()
        assert (points[:, 1] <= height).all()
        if kind == "bbox":
            assert len(points) == 2 and (points[0] <= points[1]).all()
        else:
            assert len(points) >= 3 and not np.array_equal(points[0], points[-1])
    return annotations


def by_category(annotations: list[dict[str, Any]]) -> dict[int, list[list[float]]]:
    """Each category's shapes' extents ``[x0, y0, x1, y1]``, sorted."""
    extents: dict[int, list[list[float]]] = {}
    for a in annotations:
        points = np.array(a["points"], dtype=float)
        box = [*points.min(axis=0).tolist(), *points.max(axis=0).tolist()]
        extents.setdefault(a["category_id"], []).append(box)
    return {k: sorted(v) for k, v in extents.items()}


def expected_things(scene: Scene) -> dict[int, list[list[float]]]:
    want: dict[int, list[list[float]]] = {}
    for name, x0, y0, x1, y1 in scene.rectangles(SIZE):
        want.setdefault(CATEGORY_IDS[name], []).append([x0, y0, x1, y1])
    return {k: sorted(v) for k, v in want.items()}


def assert_extents(got: dict[int, list[list[float]]], want: dict[int, list[list[float]]]) -> None:
    assert sorted(got) == sorted(want)
    for category, boxes in want.items():
        np.testing.assert_allclose(got[category], boxes, rtol=0, atol=1.0, err_msg=str(category))


@pytest.mark.slow
def test_a_bboxes_dataset_gets_the_drawn_rectangles_as_boxes(
    emulator: Emulator, segments_client: SegmentsClient, tmp_path: Path, standin_pipeline: Pipeline
) -> None:
    uuids = seed(emulator, "bboxes")
    # A person finished the third sample: never written over.
    person = {
        "format_version": "0.1",
        "annotations": [{"id": 1, "category_id": 3, "type": "bbox", "points": [[0, 0], [5, 5]]}],
    }
    emulator.write_label(uuids[2], GT, person, label_status="LABELED")
    vector = VectorSettings(score_attribute="confidence")

    summary, report = run(emulator, tmp_path, standin_pipeline, "bboxes", vector)

    assert summary.counts == {"labeled": 2}
    assert {s["sample_uuid"]: s["result"] for s in report["samples"]} == {
        uuids[0]: "labeled",
        uuids[1]: "labeled",
    }
    for uuid, scene in zip(uuids[:2], SCENES, strict=False):
        annotations = valid_annotations(segments_client, uuid, "bbox")
        assert_extents(by_category(annotations), expected_things(scene))  # no stuff boxes
        for a in annotations:
            # The score goes only where the category declares the number attribute.
            if a["category_id"] == CATEGORY_IDS["car"]:
                assert 0.0 < a["attributes"]["confidence"] <= 1.0
            else:
                assert not a.get("attributes")
    assert emulator.get_label(uuids[2])["attributes"] == person
    assert emulator.label_write_counts() == {(u, GT): 1 for u in uuids[:2]}
    # A rerun finds nothing to do.
    summary, _ = run(emulator, tmp_path, standin_pipeline, "bboxes", vector)
    assert summary.counts == {}
    assert emulator.label_write_counts() == {(u, GT): 1 for u in uuids[:2]}


@pytest.mark.slow
def test_a_vector_dataset_gets_polygons_of_things_and_stuff(
    emulator: Emulator, segments_client: SegmentsClient, tmp_path: Path, standin_pipeline: Pipeline
) -> None:
    uuids = seed(emulator, "vector")

    summary, _ = run(emulator, tmp_path, standin_pipeline, "vector")

    assert summary.counts == {"labeled": 3}
    width, height = SIZE
    for uuid, scene in zip(uuids, SCENES, strict=True):
        annotations = valid_annotations(segments_client, uuid, "polygon")
        got = by_category(annotations)
        assert_extents({k: v for k, v in got.items() if k <= 2}, expected_things(scene))
        # Each stuff band is one polygon spanning the image's width.
        for name, top, bottom in scene.bands:
            [extent] = got[CATEGORY_IDS[name]]
            want = [0, round(top * height), width, round(bottom * height)]
            np.testing.assert_allclose(extent, want, rtol=0, atol=1.0)
        # Simplified: a rectangle needs a handful of points, never one per boundary pixel.
        assert all(len(a["points"]) <= 12 for a in annotations if a["category_id"] <= 2)
    assert emulator.label_write_counts() == {(u, GT): 1 for u in uuids}


@pytest.mark.slow
def test_stuff_skip_writes_only_things(
    emulator: Emulator, segments_client: SegmentsClient, tmp_path: Path, standin_pipeline: Pipeline
) -> None:
    uuids = seed(emulator, "vector")

    summary, report = run(
        emulator, tmp_path, standin_pipeline, "vector", VectorSettings(stuff="skip")
    )

    assert summary.counts == {"labeled": 3}
    segments = {s["sample_uuid"]: s["segments"] for s in report["samples"]}
    for uuid, scene in zip(uuids, SCENES, strict=True):
        got = by_category(valid_annotations(segments_client, uuid, "polygon"))
        assert_extents(got, expected_things(scene))
        assert segments[uuid] == len(scene.things)


@pytest.mark.slow
def test_the_sdks_coco_instance_export_takes_the_labeled_datasets(
    emulator: Emulator, segments_client: SegmentsClient, tmp_path: Path, standin_pipeline: Pipeline
) -> None:
    for task_type in ("bboxes", "vector"):
        uuids = seed(emulator, task_type)
        run(emulator, tmp_path / task_type, standin_pipeline, task_type)
        release = release_json(segments_client, f"jane/{task_type}")
        path = tmp_path / f"{task_type}-release.json"
        path.write_text(json.dumps(release), encoding="utf-8")
        dataset = SegmentsDataset(
            str(path), labelset=GT, filter_by=["PRELABELED"], segments_dir=str(tmp_path / "seg")
        )
        export_dataset(
            dataset, export_folder=str(tmp_path / task_type), export_format="coco-instance"
        )

        [exported] = (tmp_path / task_type).glob("export_coco-instance_*.json")
        coco = json.loads(exported.read_text(encoding="utf-8"))
        assert len(coco["images"]) == len(uuids)
        written = sum(
            len(segments_client.get_label(u, labelset=GT).attributes.annotations) for u in uuids
        )
        assert len(coco["annotations"]) == written > 0
        if task_type == "bboxes":
            assert all(a["bbox"][2] > 0 and a["bbox"][3] > 0 for a in coco["annotations"])
        else:
            assert all(len(a["points"]) >= 3 for a in coco["annotations"])


def release_json(client: SegmentsClient, full_name: str) -> dict[str, Any]:
    """A release file as ``SegmentsDataset`` reads it (spec sections 6, 12.5), built through
    the SDK from the dataset, its samples and their labels."""
    dataset = client.get_dataset(full_name)
    samples = []
    for sample in client.get_samples(full_name):
        label = client.get_label(sample.uuid, labelset=GT)
        samples.append(
            {
                "uuid": sample.uuid,
                "name": sample.name,
                "attributes": {"image": {"url": sample.attributes.image.url}},
                "metadata": sample.metadata or {},
                "labels": {
                    GT: {
                        "label_status": str(
                            getattr(label.label_status, "value", label.label_status)
                        ),
                        "attributes": label.attributes.model_dump(exclude_none=True),
                    }
                },
            }
        )
    return {
        "name": "v1",
        "dataset": {
            "owner": dataset.owner.username,
            "name": dataset.name,
            "task_type": str(getattr(dataset.task_type, "value", dataset.task_type)),
            "task_attributes": dataset.task_attributes.model_dump(exclude_none=True),
            "labelsets": [{"name": GT}],
            "samples": samples,
        },
    }


def test_a_vector_write_whose_answer_was_lost_is_found_and_not_repeated(
    emulator: Emulator, segments_client: SegmentsClient
) -> None:
    """A label without a bitmap is recognised by its content (ids, types, points)."""
    uuid = seed(emulator, "bboxes")[0]
    settings = remote_settings(
        emulator.url, read_timeout_s=0.15, retry_initial_s=0.8, retry_max_s=0.9
    )
    api = SegmentsApi(segments_client, settings)
    attributes = {
        "format_version": "0.1",
        "annotations": [
            {"id": 1, "category_id": 2, "type": "bbox", "points": [[1.5, 2.0], [9.0, 8.0]]}
        ],
    }
    pending = PendingLabel(NO_ASSET, attributes, 0.7)
    emulator.set_faults([FaultRule(path="/labels/*", method="PUT", latency_s=0.3, times=1)])

    result = write_label(
        api, settings, sample_uuid=uuid, labelset=GT, pending=pending, overwrite=False
    )

    assert result.written
    assert emulator.label_write_count(uuid) == 1


def test_a_previous_prelabel_is_replaced_when_overwriting(
    emulator: Emulator, segments_client: SegmentsClient
) -> None:
    """With ``--overwrite-prelabels`` an older pre-label (other shapes) is written over; the
    same shapes count as already written."""
    uuid = seed(emulator, "bboxes")[0]
    api = SegmentsApi(segments_client, remote_settings(emulator.url))
    old = {
        "format_version": "0.1",
        "annotations": [
            {"id": 1, "category_id": 1, "type": "bbox", "points": [[0.0, 0.0], [4.0, 4.0]]}
        ],
    }
    emulator.write_label(uuid, GT, old, label_status="PRELABELED")
    new = {
        "format_version": "0.1",
        "annotations": [
            {"id": 1, "category_id": 2, "type": "bbox", "points": [[1.0, 1.0], [6.0, 5.0]]}
        ],
    }

    def write(attributes: dict[str, Any]) -> bool:
        return write_label(
            api,
            remote_settings(emulator.url),
            sample_uuid=uuid,
            labelset=GT,
            pending=PendingLabel(NO_ASSET, attributes, 0.5),
            overwrite=True,
        ).written

    assert write(new)
    assert emulator.get_label(uuid)["attributes"]["annotations"][0]["category_id"] == 2
    assert emulator.label_write_count(uuid) == 1
    assert write(new)  # ours already: not written again
    assert emulator.label_write_count(uuid) == 1


def test_commands_that_label_bitmaps_only_refuse_a_vector_dataset(emulator: Emulator) -> None:
    seed(emulator, "vector")
    api = SegmentsApi.connect(EMULATOR_API_KEY, remote_settings(emulator.url))
    try:
        with pytest.raises(ConfigError, match=r"'vector'.*segmentation-bitmap datasets only"):
            check_dataset(api, Settings(), "jane/vector", GT)
        info, _ = check_dataset(api, Settings(), "jane/vector", GT, vectors=True)
    finally:
        api.close()
    assert info.task_type == "vector"
