"""Local outputs: deterministic colours, overlay previews, and a COCO-panoptic export read back."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from prelabel.config import CategoryOptions, PipelineSettings
from prelabel.formats.coco_panoptic import CocoPanopticWriter
from prelabel.formats.overlay import category_color, colorize, overlay
from prelabel.panoptic import MaskCandidate, PanopticPrediction, Segment
from prelabel.pipeline.merge import merge_panoptic
from prelabel.taxonomy import Category, Taxonomy, build_taxonomy
from tests.fixtures.images import noise_image

PERSON = Category(id=1, name="person", has_instances=True, color=(220, 20, 60))
CAR = Category(id=2, name="car", has_instances=True)
SKY = Category(id=3, name="sky", color=(70, 130, 180, 255))
ROAD = Category(id=4, name="road")
TREE = Category(id=70000, name="tree")  # ignored below; must still appear in the export

TAXONOMY = build_taxonomy(
    [PERSON, CAR, SKY, ROAD, TREE], {"tree": CategoryOptions(ignore=True)}, PipelineSettings()
)


def seg(seg_id: int, category: Category, id_map: npt.NDArray[np.uint32]) -> Segment:
    """A segment whose area and bbox are read off the map, so fixtures cannot disagree."""
    ys, xs = np.nonzero(id_map == seg_id)
    x0, y0 = int(xs.min()), int(ys.min())
    return Segment(
        id=seg_id,
        category_id=category.id,
        is_thing=category.has_instances,
        score=0.5,
        area=int(ys.size),
        bbox=(x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1),
    )


def scene() -> PanopticPrediction:
    """Two persons, a car, sky and road on a 6x8 map, with a large id to exercise G and B."""
    id_map = np.array(
        [
            [4, 4, 4, 4, 4, 4, 4, 4],
            [4, 1, 1, 4, 2, 2, 4, 4],
            [0, 1, 1, 0, 2, 2, 3, 3],
            [5, 5, 5, 5, 5, 5, 3, 3],
            [5, 5, 5, 5, 5, 5, 5, 70001],
            [5, 5, 5, 5, 5, 5, 5, 70001],
        ],
        dtype=np.uint32,
    )
    cats = {1: PERSON, 2: PERSON, 3: CAR, 4: SKY, 5: ROAD, 70001: CAR}
    return PanopticPrediction(
        id_map=id_map, segments=tuple(seg(i, cat, id_map) for i, cat in sorted(cats.items()))
    )


# --- colours -----------------------------------------------------------------------------------

COLOR_CASES = [
    pytest.param(PERSON, 0, (220, 20, 60), id="thing-first-instance-own-color"),
    pytest.param(SKY, 0, (70, 130, 180), id="rgba-color-uses-rgb"),
    pytest.param(SKY, 5, (70, 130, 180), id="stuff-never-jitters"),
    pytest.param(Category(id=9, name="x", color=(300, -5, 7)), 0, (255, 0, 7), id="clipped"),
]


@pytest.mark.parametrize(("category", "index", "expected"), COLOR_CASES)
def test_category_color(category: Category, index: int, expected: tuple[int, int, int]) -> None:
    assert category_color(category, index) == expected


def test_palette_color_is_deterministic_and_differs_between_categories() -> None:
    palette = [category_color(Category(id=i, name=str(i)), 0) for i in range(1, 21)]

    assert palette == [category_color(Category(id=i, name=str(i)), 0) for i in range(1, 21)]
    assert len(set(palette)) == len(palette)
    assert all(0 <= c <= 255 for color in palette for c in color)


@pytest.mark.parametrize("category", [PERSON, CAR, Category(id=5, name="w", has_instances=True,
                                                          color=(255, 255, 255))])  # fmt: skip
def test_later_instances_are_shades_of_the_base_told_apart_deterministically(
    category: Category,
) -> None:
    base = np.array(category_color(category, 0))
    later = [category_color(category, i) for i in range(1, 30)]

    assert later == [category_color(category, i) for i in range(1, 30)]
    assert all(tuple(base) != c for c in later)
    assert all(0 <= v <= 255 for c in later for v in c)
    # The first instances, the ones a scene usually has, differ clearly (not a jitter of a few
    # levels): every pair of the first five is at least 30 apart in some channel.
    first = [tuple(base), *later[:4]]
    gaps = [
        np.abs(np.array(a) - np.array(b)).max() for i, a in enumerate(first) for b in first[i + 1 :]
    ]
    assert min(gaps) >= 30, gaps
    if category.color != (255, 255, 255):  # a grey has no hue to turn
        assert len(set(later)) > 20


def test_negative_instance_index_raises() -> None:
    with pytest.raises(ValueError, match="instance_index must be >= 0"):
        category_color(PERSON, -1)


def test_colorize_paints_each_segment_its_color_and_zero_black() -> None:
    pred = scene()

    colors = colorize(pred, TAXONOMY)

    assert colors.shape == (6, 8, 3) and colors.dtype == np.uint8
    assert tuple(colors[2, 0]) == (0, 0, 0)
    assert tuple(colors[1, 1]) == category_color(PERSON, 0)
    assert tuple(colors[1, 4]) == category_color(PERSON, 1)
    assert tuple(colors[2, 6]) == category_color(CAR, 0)
    assert tuple(colors[4, 7]) == category_color(CAR, 1)
    assert tuple(colors[0, 0]) == (70, 130, 180)
    np.testing.assert_array_equal(colors, colorize(pred, TAXONOMY))


def test_colorize_unknown_category_raises() -> None:
    id_map = np.ones((2, 2), dtype=np.uint32)
    pred = PanopticPrediction(id_map=id_map, segments=(seg(1, Category(id=99, name="?"), id_map),))

    with pytest.raises(ValueError, match="category id 99"):
        colorize(pred, TAXONOMY)


# --- overlay -----------------------------------------------------------------------------------


def photo(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    return noise_image(*size).convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_overlay_keeps_size_and_returns_rgb(mode: str) -> None:
    pred = scene()

    out = overlay(photo(pred.size, mode), pred, TAXONOMY)

    assert out.size == pred.size
    assert out.mode == "RGB"


def test_overlay_blends_interior_keeps_unassigned_and_draws_boundaries() -> None:
    id_map = np.zeros((10, 10), dtype=np.uint32)
    id_map[2:8, 2:8] = 1
    pred = PanopticPrediction(id_map=id_map, segments=(seg(1, SKY, id_map),))
    image = photo(pred.size)
    pixels = np.asarray(image).astype(np.float64)

    out = np.asarray(overlay(image, pred, TAXONOMY, alpha=0.25)).astype(np.float64)

    expected_inside = np.rint(pixels[4, 4] * 0.75 + np.array([70, 130, 180]) * 0.25)
    np.testing.assert_allclose(out[4, 4], expected_inside, atol=1)
    np.testing.assert_array_equal(out[0, 0], pixels[0, 0])
    assert tuple(out[2, 4]) == (70, 130, 180)  # inner side of the top edge: the outline
    np.testing.assert_array_equal(out[1, 4], pixels[1, 4])  # outer side: unassigned, untouched
    assert tuple(out[4, 4]) != (70, 130, 180)


OVERLAY_ERRORS = [
    pytest.param((8, 6), 0.5, nullcontext(), id="valid"),
    pytest.param((6, 8), 0.5, pytest.raises(ValueError, match=r"\(6, 8\).*\(8, 6\)"), id="size"),
    pytest.param((8, 6), 1.5, pytest.raises(ValueError, match="alpha"), id="alpha"),
]


@pytest.mark.parametrize(("size", "alpha", "expectation"), OVERLAY_ERRORS)
def test_overlay_rejects_bad_input(
    size: tuple[int, int], alpha: float, expectation: AbstractContextManager[object]
) -> None:
    with expectation:
        overlay(photo(size), scene(), TAXONOMY, alpha=alpha)


# --- COCO panoptic -----------------------------------------------------------------------------


def read_panoptic_png(path: Path) -> npt.NDArray[np.int64]:
    rgb = np.asarray(Image.open(path))
    assert rgb.ndim == 3 and rgb.shape[2] == 3, "COCO panoptic PNGs are RGB"
    rgb = rgb.astype(np.int64)
    return rgb[:, :, 0] + 256 * rgb[:, :, 1] + 65536 * rgb[:, :, 2]


def merged_prediction() -> PanopticPrediction:
    """A prediction straight from the merge, upscaled, like the predict command's."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:30, :40]

    def ellipse() -> npt.NDArray[np.bool_]:
        cy, cx = rng.uniform(5, 25), rng.uniform(5, 35)
        return ((yy - cy) / 6) ** 2 + ((xx - cx) / 8) ** 2 < 1

    candidates = [
        MaskCandidate(mask=ellipse(), category_id=1, score=0.9, is_thing=True),
        MaskCandidate(mask=ellipse(), category_id=1, score=0.8, is_thing=True),
        MaskCandidate(mask=ellipse(), category_id=2, score=0.7, is_thing=True),
        MaskCandidate(mask=yy < 12, category_id=3, score=0.6, is_thing=False),
        MaskCandidate(mask=yy >= 12, category_id=4, score=0.5, is_thing=False),
    ]
    return merge_panoptic(candidates, min_area=5, output_size=(81, 59))


def test_coco_panoptic_export_reads_back(tmp_path: Path) -> None:
    predictions = {"a.jpg": scene(), "sub/b.png": merged_prediction()}

    writer = CocoPanopticWriter(tmp_path, TAXONOMY)
    for name, pred in predictions.items():
        writer.add(name, pred)
    json_path = writer.close()

    assert json_path == tmp_path / "panoptic.json"
    doc = json.loads(json_path.read_text())
    assert set(doc) == {"images", "annotations", "categories"}
    assert doc["images"] == [
        {"id": 1, "file_name": "a.jpg", "width": 8, "height": 6},
        {"id": 2, "file_name": "sub/b.png", "width": 81, "height": 59},
    ]
    assert doc["categories"] == [
        {"id": 1, "name": "person", "isthing": 1, "color": [220, 20, 60]},
        {"id": 2, "name": "car", "isthing": 1, "color": list(category_color(CAR, 0))},
        {"id": 3, "name": "sky", "isthing": 0, "color": [70, 130, 180]},
        {"id": 4, "name": "road", "isthing": 0, "color": list(category_color(ROAD, 0))},
        {"id": 70000, "name": "tree", "isthing": 0, "color": list(category_color(TREE, 0))},
    ]
    for image, ann, pred in zip(
        doc["images"], doc["annotations"], predictions.values(), strict=True
    ):
        assert ann["image_id"] == image["id"]
        panoptic = read_panoptic_png(tmp_path / "panoptic" / ann["file_name"])
        assert panoptic.shape == (image["height"], image["width"])
        assert len(ann["segments_info"]) == len(pred.segments) > 0
        covered = np.zeros(panoptic.shape, dtype=bool)
        for info, segment in zip(ann["segments_info"], pred.segments, strict=True):
            assert info == {
                "id": segment.id,
                "category_id": segment.category_id,
                "iscrowd": 0,
                "bbox": list(segment.bbox),
                "area": segment.area,
            }
            mask = panoptic == info["id"]
            np.testing.assert_array_equal(mask, pred.id_map == segment.id)
            covered |= mask
        assert (panoptic[~covered] == 0).all()
    assert [a["file_name"] for a in doc["annotations"]] == ["a.png", "sub/b.png"]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "a.png",
        "b.png",
        "panoptic.json",
    ], "no temporary files are left behind"


def test_png_is_written_by_add_before_close(tmp_path: Path) -> None:
    writer = CocoPanopticWriter(tmp_path, TAXONOMY, name="run1")

    writer.add("x.jpg", scene(), image_id=42)

    assert (tmp_path / "run1" / "x.png").is_file()
    assert not (tmp_path / "run1.json").exists()
    assert json.loads(writer.close().read_text())["images"][0]["id"] == 42


def test_context_manager_closes(tmp_path: Path) -> None:
    with CocoPanopticWriter(tmp_path, TAXONOMY) as writer:
        writer.add("x.jpg", scene())

    assert (tmp_path / "panoptic.json").is_file()
    with pytest.raises(RuntimeError, match="closed"):
        writer.add("y.jpg", scene())


ADD_ERRORS = [
    pytest.param("c.jpg", None, nullcontext(), id="valid"),
    pytest.param("a.jpg", None, pytest.raises(ValueError, match="already written"), id="same-png"),
    pytest.param("a.png", None, pytest.raises(ValueError, match="already written"), id="same-stem"),
    pytest.param("c.jpg", 1, pytest.raises(ValueError, match="image id 1"), id="same-image-id"),
    pytest.param("../c.jpg", None, pytest.raises(ValueError, match="relative"), id="climbs-out"),
    pytest.param("/tmp/c.jpg", None, pytest.raises(ValueError, match="relative"), id="absolute"),
    pytest.param("", None, pytest.raises(ValueError, match="relative"), id="empty-name"),
]


@pytest.mark.parametrize(("file_name", "image_id", "expectation"), ADD_ERRORS)
def test_add_rejects_clashes_and_unsafe_names(
    tmp_path: Path,
    file_name: str,
    image_id: int | None,
    expectation: AbstractContextManager[object],
) -> None:
    writer = CocoPanopticWriter(tmp_path, TAXONOMY)
    writer.add("a.jpg", scene())

    with expectation:
        writer.add(file_name, scene(), image_id=image_id)


def test_add_rejects_broken_prediction(tmp_path: Path) -> None:
    writer = CocoPanopticWriter(tmp_path, TAXONOMY)
    bad = PanopticPrediction(id_map=np.array([[1, 2]], dtype=np.uint32), segments=())

    with pytest.raises(ValueError, match="without a segment"):
        writer.add("a.jpg", bad)

    assert not any((tmp_path / "panoptic").iterdir())


def test_writer_with_empty_taxonomy_categories_writes_valid_json(tmp_path: Path) -> None:
    taxonomy = Taxonomy(categories=(), things=(), stuff=())

    doc = json.loads(CocoPanopticWriter(tmp_path, taxonomy).close().read_text())

    assert doc == {"images": [], "annotations": [], "categories": []}
