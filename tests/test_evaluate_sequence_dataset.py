"""``prelabel evaluate --dataset`` on an image-sequence dataset: emulator, real SDK, tiny models.

The person's labels are made from the tiny sequence pipeline's own predictions, so a correct
evaluation scores them perfectly (any misalignment of frames, ids or sizes would not), and a
copy that joins two predicted tracks into one keeps its per-frame PQ but loses in AQ.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from prelabel.cli.evaluate import evaluate
from prelabel.config import ModelSettings, SequenceSettings, Settings
from prelabel.emulator import Emulator
from prelabel.emulator.sequences import (
    FrameScene,
    moving_shapes,
    seed_sequence_dataset,
    write_sequence_ground_truth,
)
from prelabel.pipeline.pipeline import Pipeline
from prelabel.pipeline.sequence import SequencePipeline
from tests.connector_helpers import LABELING_PIPELINE, write_config
from tests.fixtures.emulator import DEMO_CATEGORIES, EMULATOR_API_KEY
from tests.test_cli_evaluate import restore_log_record_factory  # noqa: F401
from tests.test_evaluation_run import demo_taxonomy

DATASET = "jane/clips"
THINGS = {c["id"] for c in DEMO_CATEGORIES if c["has_instances"]}
#: Detections on every frame: the tiny models' tracks do not outlive their first frame.
SEQUENCE = {"keyframe_interval": 1}


def predicted_scenes(clip: list[FrameScene], models_dir: Path) -> list[FrameScene]:
    """The clip as the tiny sequence pipeline labels it (what `evaluate` will predict)."""
    settings = Settings(
        models=ModelSettings(device="cpu"),
        pipeline=LABELING_PIPELINE,
        sequence=SequenceSettings(**SEQUENCE),
    )
    pipeline = SequencePipeline(Pipeline.load(settings, models_dir), settings, models_dir)
    frames = pipeline.predict_frames((s.image for s in clip), demo_taxonomy())
    return [
        FrameScene(
            scene.image,
            f.prediction.id_map,
            {seg.id: seg.category_id for seg in f.prediction.segments},
        )
        for scene, f in zip(clip, frames, strict=True)
    ]


def renamed(scene: FrameScene, old: int, new: int) -> FrameScene:
    """The frame with object ``old`` labeled as ``new``: the person says it is that track."""
    id_map = np.where(scene.id_map == old, new, scene.id_map).astype(np.uint32)
    names = {new if i == old else i: c for i, c in scene.annotations.items()}
    return FrameScene(scene.image, id_map, names)


@pytest.mark.slow
@pytest.mark.usefixtures("restore_log_record_factory")
def test_sequence_evaluation_scores_frames_and_tracks_and_leaves_out_a_broken_sequence(
    emulator: Emulator, tiny_models_dir: Path, tmp_path: Path
) -> None:
    clip = moving_shapes(3, seed=11)
    truth = predicted_scenes(clip, tiny_models_dir)
    # The "joined" label says frame 1's first thing is frame 0's first thing: one person's
    # track where the prediction has two (tiny SAM 2 weights lose every object at once).
    first, second = (min(i for i in s.annotations if s.annotations[i] in THINGS) for s in truth[:2])
    assert first != second, [s.annotations for s in truth]
    broken: list[FrameScene | None] = [clip[0], None, clip[2]]
    uuids = seed_sequence_dataset(
        emulator,
        DATASET,
        {"exact": clip, "joined": clip, "broken": broken, "open": clip},
        DEMO_CATEGORIES,
    ).sample_uuids
    write_sequence_ground_truth(emulator, uuids[0], truth)
    joined = [truth[0], renamed(truth[1], second, first), truth[2]]
    write_sequence_ground_truth(emulator, uuids[1], joined)
    write_sequence_ground_truth(emulator, uuids[2], truth)
    out = tmp_path / "eval.json"
    emulator.clear_requests()

    result = CliRunner().invoke(
        evaluate,
        [
            "--dataset",
            DATASET,
            "--api-url",
            emulator.url,
            "--config",
            str(write_config(tmp_path / "config.yaml", sequence=SEQUENCE)),
            "--models",
            str(tiny_models_dir),
            "--out",
            str(out),
            "-q",
        ],
        env={"SEGMENTS_API_KEY": EMULATOR_API_KEY},
    )

    assert result.exit_code == 1, result.output  # the broken sequence
    document = json.loads(out.read_text())
    assert document["samples"] == {
        "evaluated": 2,
        "frames": 6,  # the broken sequence's first frame was scored, then taken out again
        "failed": 1,
        "not_human_labeled": 1,
    }
    (failure,) = document["failures"]
    assert failure["sample_uuid"] == uuids[2] and "frame 1 (frame_00001)" in failure["reason"]
    assert document["overall"]["pq"] == 1.0  # every frame matches its label
    tracking = document["tracking"]
    assert tracking["mean_frame_pq"] == 1.0 and tracking["sq"] == 1.0
    assert 0.0 < tracking["aq"] < 1.0 and tracking["stq"] < 1.0  # the joined track, only it
    assert "2 sequences: STQ" in result.stdout
    assert {r.method for r in emulator.requests} == {"GET"}  # read-only
