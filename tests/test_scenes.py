"""The demo's drawn street scenes: deterministic, and their ground truth matches the paint."""

from __future__ import annotations

import numpy as np
import pytest

from prelabel.emulator.scenes import SCENE_CATEGORIES, street_scene

IDS = {name: index + 1 for index, name in enumerate(SCENE_CATEGORIES)}
THINGS = {IDS["car"], IDS["person"]}


@pytest.mark.parametrize("seed", range(6))
def test_every_pixel_has_an_annotated_segment_and_ids_follow_the_kind(seed: int) -> None:
    scene = street_scene(seed, IDS, size=(192, 128))

    assert scene.image.size == (192, 128) and scene.image.mode == "RGB"
    assert scene.id_map.shape == (128, 192) and scene.id_map.dtype == np.uint32
    present = {int(i) for i in np.unique(scene.id_map)}
    assert 0 not in present
    assert present == set(scene.annotations)  # no annotation without pixels, nor the reverse
    stuff = [c for c in scene.annotations.values() if c not in THINGS]
    assert len(stuff) == len(set(stuff))  # one segment per stuff category
    assert {IDS["sky"], IDS["road"], IDS["sidewalk"], IDS["building"]} <= set(stuff)
    assert any(c in THINGS for c in scene.annotations.values())


def test_the_same_seed_draws_the_same_scene_and_another_seed_another() -> None:
    first, again, other = street_scene(3, IDS), street_scene(3, IDS), street_scene(4, IDS)

    np.testing.assert_array_equal(np.asarray(first.image), np.asarray(again.image))
    np.testing.assert_array_equal(first.id_map, again.id_map)
    assert first.annotations == again.annotations
    assert not np.array_equal(first.id_map, other.id_map)


def test_the_ground_truth_lies_where_its_category_was_painted() -> None:
    scene = street_scene(1, IDS)
    pixels = np.asarray(scene.image).astype(float)
    category_map = np.zeros_like(scene.id_map)
    for seg_id, category_id in scene.annotations.items():
        category_map[scene.id_map == seg_id] = category_id

    sky = pixels[category_map == IDS["sky"]].mean(axis=0)
    road = pixels[category_map == IDS["road"]].mean(axis=0)
    assert sky[2] > sky[0] + 40  # blue above
    assert np.ptp(road) < 15 and road.mean() < 110  # dark grey below
    sky_rows = np.nonzero((category_map == IDS["sky"]).any(axis=1))[0]
    road_rows = np.nonzero((category_map == IDS["road"]).any(axis=1))[0]
    assert sky_rows.max() < road_rows.min()


def test_a_missing_category_id_is_named() -> None:
    with pytest.raises(KeyError, match="person"):
        street_scene(0, {k: v for k, v in IDS.items() if k != "person"})
