"""``prelabel predict --sequence``: folders of frames in, per-frame bitmaps with track ids out.

Tiny random-weight models through the real loading path; what they find is random, the
contract between bitmaps, labels and ``tracks.json`` is not.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from prelabel.cli import main
from prelabel.emulator.sequences import moving_shapes
from prelabel.formats.bitmap import decode_bitmap
from prelabel.formats.overlay import category_color, preview
from prelabel.formats.sequence_label import pooled_score
from prelabel.local_sequences import track_numbers
from prelabel.panoptic import PanopticPrediction, Segment, TrackInfo
from prelabel.taxonomy import Category, build_taxonomy
from tests.connector_helpers import LABELING_PIPELINE, write_config
from tests.fixtures.emulator import DEMO_CATEGORIES

REPO = Path(__file__).resolve().parents[1]


def write_frames(folder: Path, sizes: list[tuple[int, int]], seed: int) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for index, scene in enumerate(moving_shapes(len(sizes), sizes=sizes, seed=seed)):
        path = folder / f"f{index:03d}.png"
        scene.image.save(path)
        paths.append(path)
    return paths


@pytest.mark.slow
def test_predict_sequence_writes_bitmaps_labels_overlays_and_tracks_that_agree(
    tmp_path: Path, tiny_models_dir: Path
) -> None:
    sizes = [(64, 48), (80, 60), (64, 48)]
    write_frames(tmp_path / "drive", sizes, seed=1)
    write_frames(tmp_path / "broken", [(64, 48), (64, 48)], seed=2)
    (tmp_path / "broken" / "f001.png").write_bytes(b"not a png")
    categories = tmp_path / "categories.yaml"
    categories.write_text(json.dumps({"categories": list(DEMO_CATEGORIES)}), encoding="utf-8")
    out = tmp_path / "out"

    result = CliRunner().invoke(
        main,
        [
            "predict",
            "--sequence",
            str(tmp_path / "drive"),
            str(tmp_path / "broken"),
            "--categories",
            str(categories),
            "--out",
            str(out),
            "--models",
            str(tiny_models_dir),
            "--config",
            str(write_config(tmp_path / "config.yaml", sequence={"keyframe_interval": 1})),
        ],
    )

    assert result.exit_code == 1, result.output  # the broken folder
    assert "failed: " in result.stderr and "broken" in result.stderr
    assert "1 of 2 sequences pre-labeled" in result.stderr
    tracks = json.loads((out / "drive" / "tracks.json").read_text())["tracks"]
    by_id = {t["track_id"]: t for t in tracks}
    assert tracks and len(by_id) == len(tracks)
    scored: list[tuple[float, int]] = []  # each frame's label score and segmented area
    for index, size in enumerate(sizes):
        name = f"f{index:03d}"
        id_map = decode_bitmap((out / "drive" / "bitmaps" / f"{name}.png").read_bytes(), size)
        label = json.loads((out / "drive" / "labels" / f"{name}.json").read_text())
        ids = {int(i) for i in np.unique(id_map)} - {0}
        scored.append((label["score"], int(np.count_nonzero(id_map))))
        assert ids == {a["id"] for a in label["annotations"]}
        assert ids == {t for t, track in by_id.items() if index in track["frames"]}
        for annotation in label["annotations"]:
            assert annotation["track_id"] == annotation["id"]
            assert annotation["category_id"] == by_id[annotation["id"]]["category_id"]
        assert label["keyframe"] is True  # keyframe_interval 1
        with Image.open(out / "drive" / "overlays" / f"{name}.png") as overlay:
            assert overlay.width == size[0]
    report = json.loads((out / "report.json").read_text())
    assert report["version"] == 1 and report["command"] == "predict --sequence"  # run's schema
    assert [s["sample_name"] for s in report["samples"]] == ["drive", "broken"]
    assert [s["result"] for s in report["samples"]] == ["predicted", "failed"]
    assert report["samples"][1]["reason"]
    assert report["summary"]["counts"] == {"predicted": 1, "failed": 1}
    # The sequence's score is the images' definition pooled over frames: area-weighted.
    assert report["samples"][0]["score"] == pytest.approx(pooled_score(scored), abs=1e-6)


def test_a_track_keeps_its_number_and_colour_whatever_else_is_in_the_frame() -> None:
    tracks = [
        TrackInfo(track_id=1, category_id=1, is_thing=True, frames=(0, 1)),
        TrackInfo(track_id=2, category_id=1, is_thing=True, frames=(0,)),
        TrackInfo(track_id=3, category_id=1, is_thing=True, frames=(1, 2)),
        TrackInfo(track_id=4, category_id=3, is_thing=False, frames=(0, 1, 2)),
    ]
    numbers = track_numbers(tracks)
    assert numbers == {1: 0, 2: 1, 3: 2, 4: 0}

    # Frame 2 holds only track 3: drawn as the category's third instance, not its first.
    id_map = np.zeros((20, 20), np.uint32)
    id_map[5:15, 5:15] = 3
    frame = PanopticPrediction(id_map, (Segment(3, 1, True, 0.9, 100, (5, 5, 10, 10)),))
    categories = [Category(c["id"], c["name"], c["has_instances"]) for c in DEMO_CATEGORIES]
    taxonomy = build_taxonomy(categories, {}, LABELING_PIPELINE)
    black = Image.new("RGB", (20, 20))
    drawn = np.asarray(preview(black, frame, taxonomy, alpha=1.0, instance_numbers=numbers))
    person = taxonomy.categories[0]
    assert tuple(drawn[10, 10]) == category_color(person, 2) != category_color(person, 0)
