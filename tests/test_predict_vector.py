"""``prelabel predict --format bboxes|vector``: box and polygon labels of image files.

The deterministic stand-ins of ``tests/fixtures/standins.py`` see coloured rectangles, so the
label JSON, the COCO-instance export and the preview each have a known answer: the drawn
rectangles come back as boxes and polygons within a pixel, stuff bands as polygons of the full
width (``vector`` only), and the preview outlines each box in its category's colour while what
was not written (stuff, in a box label) stays untinted.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from segments.typing import ImageVectorLabelAttributes

from prelabel.cli import main
from prelabel.config import VectorSettings
from prelabel.formats.overlay import category_color
from prelabel.local import LocalReport, predict_files
from prelabel.pipeline.pipeline import Pipeline
from prelabel.taxonomy import Category, Taxonomy, build_taxonomy
from tests.fixtures.standins import PALETTE, Scene, draw_scene

SIZE = (256, 192)
CATEGORIES = [
    Category(1, "person", has_instances=True, color=(220, 20, 60)),
    Category(2, "car", has_instances=True, color=(0, 0, 142)),
    Category(3, "sky", has_instances=False, color=(70, 130, 180)),
    Category(4, "road", has_instances=False, color=(128, 64, 128)),
]
IDS = {c.name: c.id for c in CATEGORIES}
SCENES = {
    "street": Scene(
        bands=(("sky", 0.0, 0.4), ("road", 0.65, 1.0)),
        things=(("person", 0.12, 0.25, 0.28, 0.6), ("car", 0.6, 0.55, 0.88, 0.85)),
    ),
    "walker": Scene(bands=(("road", 0.7, 1.0),), things=(("person", 0.4, 0.3, 0.55, 0.8),)),
}


@pytest.fixture(scope="module")
def taxonomy(standin_pipeline: Pipeline) -> Taxonomy:
    return build_taxonomy(CATEGORIES, {}, standin_pipeline.settings)


def predict(
    tmp_path: Path, pipeline: Pipeline, taxonomy: Taxonomy, label_format: str, **kw: Any
) -> tuple[LocalReport, Path]:
    folder = tmp_path / "photos"
    folder.mkdir()
    paths = []
    for name, scene in SCENES.items():
        draw_scene(scene, SIZE).save(folder / f"{name}.png")
        paths.append(folder / f"{name}.png")
    out = tmp_path / "out"
    report = predict_files(
        paths,
        pipeline=pipeline,
        taxonomy=taxonomy,
        out_dir=out,
        label_format=label_format,
        **kw,
    )
    return report, out


def label(out: Path, name: str, kind: str) -> list[dict[str, Any]]:
    """``labels/<name>.json`` is a section-12.2 label of ``kind``; its annotations."""
    data = json.loads((out / "labels" / f"{name}.json").read_text())
    assert data["format_version"] == "0.1"
    annotations = [
        a.model_dump() for a in ImageVectorLabelAttributes.model_validate(data).annotations
    ]
    assert [a["id"] for a in annotations] == list(range(1, len(annotations) + 1))
    width, height = SIZE
    for a in annotations:
        points = np.array(a["points"], dtype=float)
        assert a["type"] == kind and a["category_id"] in IDS.values()
        assert (points >= 0).all() and (points[:, 0] <= width).all()
        assert (points[:, 1] <= height).all()
        if kind == "bbox":
            assert len(points) == 2 and (points[0] <= points[1]).all()
        else:
            assert len(points) >= 3 and not np.array_equal(points[0], points[-1])
    return annotations


def extents(annotations: list[dict[str, Any]]) -> dict[int, list[list[float]]]:
    found: dict[int, list[list[float]]] = {}
    for a in annotations:
        points = np.array(a["points"], dtype=float)
        found.setdefault(a["category_id"], []).append(
            [*points.min(axis=0).tolist(), *points.max(axis=0).tolist()]
        )
    return {k: sorted(v) for k, v in found.items()}


def drawn_things(scene: Scene) -> dict[int, list[list[float]]]:
    want: dict[int, list[list[float]]] = {}
    for name, x0, y0, x1, y1 in scene.rectangles(SIZE):
        want.setdefault(IDS[name], []).append([x0, y0, x1, y1])
    return {k: sorted(v) for k, v in want.items()}


def close(got: dict[int, list[list[float]]], want: dict[int, list[list[float]]]) -> None:
    assert sorted(got) == sorted(want)
    for category, boxes in want.items():
        np.testing.assert_allclose(got[category], boxes, rtol=0, atol=1.0, err_msg=str(category))


def coco(out: Path) -> Any:
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(out / "instances.json"))


@pytest.mark.slow
def test_bboxes_format_writes_the_drawn_rectangles_as_boxes_a_coco_export_and_outlines(
    tmp_path: Path, standin_pipeline: Pipeline, taxonomy: Taxonomy
) -> None:
    report, out = predict(
        tmp_path,
        standin_pipeline,
        taxonomy,
        "bboxes",
        vector=VectorSettings(score_attribute="confidence"),
    )

    assert [o.result for o in report.outcomes] == ["predicted", "predicted"]
    assert not (out / "bitmaps").exists() and not (out / "panoptic.json").exists()
    ground = coco(out)
    images = {img["file_name"]: img["id"] for img in ground.dataset["images"]}
    for name, scene in SCENES.items():
        annotations = label(out, name, "bbox")
        close(extents(annotations), drawn_things(scene))  # things only: no stuff boxes
        # The export holds the same boxes ([x, y, w, h]) with the score the label carries.
        image_id = images[str(tmp_path / "photos" / f"{name}.png")]
        exported = ground.loadAnns(ground.getAnnIds(imgIds=[image_id]))
        assert len(exported) == len(annotations)
        for a, e in zip(annotations, exported, strict=True):
            (x0, y0), (x1, y1) = a["points"]
            assert e["category_id"] == a["category_id"] and e["iscrowd"] == 0
            np.testing.assert_allclose(e["bbox"], [x0, y0, x1 - x0, y1 - y0])
            assert e["area"] == pytest.approx((x1 - x0) * (y1 - y0))
            assert 0.0 < e["score"] <= 1.0
            assert a["attributes"] == {"confidence": e["score"]}
        outcome = next(o for o in report.outcomes if o.sample_uuid.endswith(f"{name}.png"))
        assert outcome.segments == len(scene.things)
    assert sorted(c["name"] for c in ground.dataset["categories"]) == sorted(IDS)

    # The preview: the person's box outlined in the person's colour, the sky (no box) untinted.
    with Image.open(out / "overlays" / "street.png") as shown:
        pixels = np.asarray(shown.convert("RGB"))
    [(_, x0, y0, x1, _)] = [r for r in SCENES["street"].rectangles(SIZE) if r[0] == "person"]
    top_edge = pixels[y0, x0 + 2 : x1 - 2]
    assert (top_edge == category_color(CATEGORIES[0], 0)).all(axis=-1).all()
    np.testing.assert_array_equal(pixels[5, SIZE[0] // 2], PALETTE["sky"])


@pytest.mark.slow
def test_vector_format_writes_polygons_of_things_and_stuff_with_coco_segmentation(
    tmp_path: Path, standin_pipeline: Pipeline, taxonomy: Taxonomy
) -> None:
    report, out = predict(tmp_path, standin_pipeline, taxonomy, "vector")

    assert [o.result for o in report.outcomes] == ["predicted", "predicted"]
    width, height = SIZE
    ground = coco(out)
    for name, scene in SCENES.items():
        annotations = label(out, name, "polygon")
        assert all("attributes" not in a or not a["attributes"] for a in annotations)
        got = extents(annotations)
        close({k: v for k, v in got.items() if k <= 2}, drawn_things(scene))
        for band, top, bottom in scene.bands:
            [extent] = got[IDS[band]]
            want = [0, round(top * height), width, round(bottom * height)]
            np.testing.assert_allclose(extent, want, rtol=0, atol=1.0)
        assert all(len(a["points"]) <= 12 for a in annotations if a["category_id"] <= 2)
    # Every polygon exported with its ring as COCO segmentation and the ring's area: a
    # thing's ring is its rectangle, a stuff band's may be notched by the things over it.
    exported = ground.loadAnns(ground.getAnnIds())
    assert len(exported) == sum(len(label(out, n, "polygon")) for n in SCENES)
    for e in exported:
        [ring] = e["segmentation"]
        assert len(ring) >= 6 and len(ring) % 2 == 0 and 0.0 < e["score"] <= 1.0
        points = np.array(ring).reshape(-1, 2)
        x, y, w, h = e["bbox"]
        np.testing.assert_allclose([x, y, x + w, y + h], [*points.min(0), *points.max(0)])
        assert 0 < e["area"] <= w * h + 1e-6
        if e["category_id"] <= 2:
            assert e["area"] == pytest.approx(w * h, rel=0.02)


def test_format_bboxes_refuses_sequences(tmp_path: Path) -> None:
    categories = tmp_path / "cats.yaml"
    categories.write_text("categories:\n  - {id: 1, name: person, has_instances: true}\n")
    frames = tmp_path / "drive"
    frames.mkdir()
    result = CliRunner().invoke(
        main,
        [
            "predict",
            "--sequence",
            "--format",
            "bboxes",
            str(frames),
            "--categories",
            str(categories),
            "--out",
            str(tmp_path / "out"),
            "--models",
            str(tmp_path / "no-models"),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "--format bboxes takes image files" in result.output
