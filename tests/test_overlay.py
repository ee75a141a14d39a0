"""Overlay names and legends: every segment outlined and named, instances told apart.

Text cannot be read back without OCR, so the tests check what text drawing leaves behind: a
patch of the segment's own colour (unblended) with ink in it where a name was written, none
where a segment is too small, and one swatch of each segment's colour in the legend.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from PIL import Image

from prelabel.config import PipelineSettings
from prelabel.formats.overlay import (
    _marks,
    category_color,
    label_preview,
    overlay,
    preview,
)
from prelabel.panoptic import PanopticPrediction, Segment
from prelabel.taxonomy import Category, build_taxonomy
from tests.fixtures.images import noise_image

if TYPE_CHECKING:
    from prelabel.pipeline.pipeline import Pipeline

ROAD = Category(id=1, name="road", color=(128, 64, 128))
CAR = Category(id=2, name="car", has_instances=True, color=(0, 0, 142))
SKY = Category(id=3, name="sky")  # no colour of its own: a palette colour
TAXONOMY = build_taxonomy([ROAD, CAR, SKY], {}, PipelineSettings())


def grey(size: tuple[int, int]) -> Image.Image:
    return Image.new("RGB", size, (120, 120, 120))


def prediction(
    id_map: npt.NDArray[np.uint32], categories: dict[int, Category]
) -> PanopticPrediction:
    segments = []
    for seg_id, category in sorted(categories.items()):
        ys, xs = np.nonzero(id_map == seg_id)
        x0, y0 = int(xs.min()), int(ys.min())
        bbox = (x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1)
        segments.append(
            Segment(seg_id, category.id, category.has_instances, 0.25 * seg_id, int(xs.size), bbox)
        )
    return PanopticPrediction(id_map=id_map, segments=tuple(segments))


def street() -> PanopticPrediction:
    """Road below, sky above, two touching cars on the road, and a 3x3 car far away."""
    id_map = np.full((120, 200), 1, dtype=np.uint32)
    id_map[:50] = 2
    id_map[70:110, 20:100] = 3
    id_map[70:110, 100:180] = 4
    id_map[55:58, 5:8] = 5
    return prediction(id_map, {1: ROAD, 2: SKY, 3: CAR, 4: CAR, 5: CAR})


def exact_color_pixels(image: Image.Image, color: tuple[int, int, int]) -> npt.NDArray[np.bool_]:
    return np.all(np.asarray(image) == np.array(color, dtype=np.uint8), axis=-1)


def test_things_are_numbered_per_category_and_stuff_is_not() -> None:
    pred = street()
    marks = _marks(((s.id, s.category_id, s.score) for s in pred.segments), TAXONOMY, pred.id_map)

    assert [m.caption for m in marks] == ["road", "sky", "car 1", "car 2", "car 3"]
    assert marks[2].color == category_color(CAR, 0) == (0, 0, 142)  # the dataset's colour
    assert marks[3].color == category_color(CAR, 1) != marks[2].color  # instances differ
    assert marks[1].color == category_color(SKY, 0)  # a palette colour where none is given


def test_names_are_written_inside_big_segments_only() -> None:
    pred = street()
    blended = np.asarray(overlay(grey(pred.size), pred, TAXONOMY, names=False))
    named = np.asarray(overlay(grey(pred.size), pred, TAXONOMY))

    changed = np.any(named != blended, axis=-1)
    car_1, car_2 = category_color(CAR, 0), category_color(CAR, 1)
    for seg_id, color in ((3, car_1), (4, car_2), (1, ROAD.color), (2, category_color(SKY, 0))):
        inside = pred.id_map == seg_id
        patch = exact_color_pixels(Image.fromarray(named), color)  # type: ignore[arg-type]
        assert (patch & inside).sum() > 20, f"no name patch in segment {seg_id}"
        ink = changed & inside & ~patch
        assert ink.sum() > 5, f"no text in segment {seg_id}"
    far = pred.id_map == 5
    assert not changed[far].any()  # 3x3: too small for "car 3", left to the legend
    # Each name sits inside its own segment: car 1's patch does not reach into car 2.
    assert not (exact_color_pixels(Image.fromarray(named), car_1) & (pred.id_map == 4)).any()


def test_names_off_gives_the_plain_blend_and_keeps_the_outline_between_instances() -> None:
    pred = street()
    image = grey(pred.size)

    out = np.asarray(overlay(image, pred, TAXONOMY, alpha=0.5, names=False)).astype(int)

    expected = np.rint(np.array([120, 120, 120]) * 0.5 + np.array(category_color(CAR, 0)) * 0.5)
    np.testing.assert_array_equal(out[90, 60], expected)
    # The two cars touch at x = 99 | 100: the outline separates them, each side in its own
    # car's colour, unblended.
    assert tuple(out[90, 99]) == category_color(CAR, 0)
    assert tuple(out[90, 100]) == category_color(CAR, 1)
    # The 3x3 car far away is tinted but not outlined: specks get no outline.
    np.testing.assert_array_equal(
        out[56, 6],
        np.rint(np.array([120, 120, 120]) * 0.5 + np.array(category_color(CAR, 2)) * 0.5),
    )


def test_the_legend_lists_every_segment_with_its_colour() -> None:
    pred = street()

    shown = preview(grey(pred.size), pred, TAXONOMY, title="sample.png")

    assert shown.width == pred.size[0] and shown.height > pred.size[1]
    legend = shown.crop((0, pred.size[1], shown.width, shown.height))
    for seg_id in (1, 2, 3, 4, 5):
        mark_color = {1: ROAD.color, 2: category_color(SKY, 0)}.get(seg_id)
        if mark_color is None:
            mark_color = category_color(CAR, seg_id - 3)
        assert exact_color_pixels(legend, mark_color).sum() >= 16, seg_id  # type: ignore[arg-type]


def test_side_by_side_keeps_the_image_untouched_on_the_left() -> None:
    pred = street()
    image = noise_image(200, 120)

    shown = preview(image, pred, TAXONOMY, side_by_side=True)

    assert shown.width == 400
    np.testing.assert_array_equal(np.asarray(shown)[:120, :200], np.asarray(image))


def test_a_legend_without_segments_says_so_and_many_segments_wrap() -> None:
    empty = PanopticPrediction(np.zeros((40, 60), dtype=np.uint32), ())
    assert preview(grey((60, 40)), empty, TAXONOMY).height > 40

    id_map = np.repeat(np.arange(1, 41, dtype=np.uint32), 5)[None, :].repeat(30, axis=0)
    many = prediction(id_map, dict.fromkeys(range(1, 41), CAR))
    single = prediction(np.ones((30, 200), dtype=np.uint32), {1: CAR})
    one_row = preview(grey((200, 30)), single, TAXONOMY)
    assert preview(grey((200, 30)), many, TAXONOMY).height > one_row.height * 3


def test_label_preview_draws_annotated_ids_and_leaves_the_rest_unassigned() -> None:
    id_map = np.zeros((60, 80), dtype=np.uint32)
    id_map[:30] = 7  # annotated: sky
    id_map[30:] = 9  # in the bitmap but not annotated
    image = grey((80, 60))

    shown = label_preview(image, id_map, {7: SKY.id, 8: CAR.id}, TAXONOMY)

    pixels = np.asarray(shown)
    np.testing.assert_array_equal(pixels[45, 40], (120, 120, 120))  # unassigned: untouched
    assert tuple(pixels[10, 5]) != (120, 120, 120)
    legend = shown.crop((0, 60, 80, shown.height))
    assert exact_color_pixels(legend, category_color(SKY, 0)).sum() >= 16
    assert exact_color_pixels(legend, category_color(CAR, 0)).sum() == 0  # id 8 has no pixels


def test_predict_writes_a_named_preview_per_image(pipeline: Pipeline, tmp_path: Path) -> None:
    from prelabel.local import predict_files

    photo = tmp_path / "photo.png"
    noise_image(48, 32, 3).save(photo)

    report = predict_files([photo], pipeline=pipeline, taxonomy=TAXONOMY, out_dir=tmp_path / "out")

    assert [o.result for o in report.outcomes] == ["predicted"]
    with Image.open(tmp_path / "out" / "overlays" / "photo.png") as shown:
        assert shown.width == 48 and shown.height > 32  # the legend is below the image
    # report.json in the schema `prelabel run` writes.
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    assert written["version"] == 1 and written["command"] == "predict"
    [entry] = written["samples"]
    assert entry["sample_uuid"] == str(photo) and entry["sample_name"] == "photo"
    assert entry["result"] == "predicted" and entry["score"] == report.outcomes[0].score
    assert written["summary"]["counts"] == {"predicted": 1}
