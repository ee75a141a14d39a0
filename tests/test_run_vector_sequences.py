"""``prelabel run`` on ``image-vector-sequence`` datasets: emulator, real SDK, tiny models.

Every label read back obeys shared/segments-api.md 12.3: one label frame per sample frame,
``id == track_id`` on every annotation, one shape per track per frame, one category per track,
every shape a keyframe, timestamps copied, boxes ordered and inside the frame; it reads back
through the SDK as the vector-sequence model with ``type`` and ``points`` (the pydantic >= 2.8
pin, 12.4).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from segments import SegmentsClient
from segments.typing import ImageSequenceVectorLabelAttributes

from prelabel.emulator import Emulator
from prelabel.emulator.sequences import (
    FrameScene,
    frame_timestamp,
    moving_shapes,
    seed_sequence_dataset,
)
from tests.connector_helpers import read_report, write_config
from tests.fixtures.emulator import DEMO_CATEGORIES, EMULATOR_API_KEY
from tests.test_cli_run import _restore_log_record_factory, invoke  # noqa: F401

pytestmark = pytest.mark.slow

GT = "ground-truth"
DATASET = "jane/tracks"
CATEGORY_IDS = {c["id"] for c in DEMO_CATEGORIES}
SEQUENCE = {"keyframe_interval": 2}


@pytest.fixture
def persistent_sam2(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deterministic SAM 2 stand-in: objects stay where they were prompted (tiny random SAM 2
    weights lose every object after its first frame), as in tests/test_run_sequences.py."""
    from prelabel.pipeline import sequence
    from prelabel.pipeline.tracks import TrackedObject

    class Persistent:
        def __init__(self, model: object) -> None:
            self.masks: dict[int, np.ndarray] = {}

        def advance(self, image: object) -> dict[int, TrackedObject]:
            return {i: TrackedObject(m, present=True, score=0.9) for i, m in self.masks.items()}

        def add_objects(self, masks: dict[int, np.ndarray]) -> dict[int, TrackedObject]:
            self.masks.update(masks)
            return {i: TrackedObject(m, present=True, score=0.9) for i, m in masks.items()}

        def remove_objects(self, ids: Iterable[int]) -> None:
            for i in ids:
                self.masks.pop(i, None)

    monkeypatch.setattr(sequence, "Sam2Tracker", Persistent)


def assert_valid_vector_sequence(
    client: SegmentsClient, uuid: str, clip: list[FrameScene], kind: str
) -> list[list[dict[str, Any]]]:
    """The label of ``uuid`` obeys section 12.3; returns each frame's annotations."""
    label = client.get_label(uuid, labelset=GT)
    assert str(getattr(label.label_status, "value", label.label_status)) == "PRELABELED"
    assert label.label_type == "image-vector-sequence"
    # Re-validated by task type: a polygon-only sequence parses as the point-cloud model (12.4).
    attributes = ImageSequenceVectorLabelAttributes.model_validate(label.attributes.model_dump())
    frames = attributes.model_dump()["frames"]
    assert len(frames) == len(clip)
    category_of: dict[int, int] = {}
    result = []
    for index, (frame, scene) in enumerate(zip(frames, clip, strict=True)):
        assert frame["timestamp"] == frame_timestamp(index)
        height, width = scene.id_map.shape
        tracks = [a["track_id"] for a in frame["annotations"]]
        assert len(set(tracks)) == len(tracks), f"frame {index}: a track twice"
        for a in frame["annotations"]:
            assert a["id"] == a["track_id"] and a["is_keyframe"] is True
            assert a["type"] == kind and a["category_id"] in CATEGORY_IDS
            assert category_of.setdefault(a["track_id"], a["category_id"]) == a["category_id"]
            points = np.array(a["points"], dtype=float)
            assert (points >= 0).all() and (points <= [width, height]).all()
            if kind == "bbox":
                assert len(points) == 2 and (points[0] <= points[1]).all()
            else:
                assert len(points) >= 3
        result.append(frame["annotations"])
    assert category_of, "the tiny pipeline found nothing: the checks above were vacuous"
    return result


@pytest.mark.usefixtures("persistent_sam2")
@pytest.mark.parametrize("kind", ["bbox", "polygon"])
def test_tracked_objects_keep_their_track_id_as_boxes_or_polygons(
    tmp_path: Path,
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models_dir: Path,
    kind: str,
) -> None:
    clips = {"walk": list(moving_shapes(5, seed=12)), "other": list(moving_shapes(3, seed=3))}
    seeded = seed_sequence_dataset(
        emulator, DATASET, clips, DEMO_CATEGORIES, task_type="image-vector-sequence"
    )
    uuids = dict(zip(clips, seeded.sample_uuids, strict=True))
    config = write_config(
        tmp_path / "config.yaml", sequence=SEQUENCE, vector={"sequence_type": kind}
    )

    result = invoke(tmp_path, emulator.url, DATASET, models=tiny_models_dir, config=config)

    assert result.exit_code == 0, result.output
    frames = {
        name: assert_valid_vector_sequence(segments_client, uuids[name], clip, kind)
        for name, clip in clips.items()
    }
    walk = [{a["track_id"] for a in annotations} for annotations in frames["walk"]]
    assert walk[0], "nothing found on frame 0"
    # A frame-0 object is tracked through every frame under one track id.
    assert set.intersection(*walk), walk
    assert emulator.label_write_counts() == {(u, GT): 1 for u in uuids.values()}
    report = read_report(tmp_path / "out" / "report.json")
    segments = {s["sample_name"]: s["segments"] for s in report["samples"]}
    assert segments["walk"] == len(set.union(*walk))
    # A rerun finds nothing to do.
    again = invoke(tmp_path, emulator.url, DATASET, models=tiny_models_dir, config=config)
    assert again.exit_code == 0, again.output
    assert emulator.label_write_counts() == {(u, GT): 1 for u in uuids.values()}


def test_a_persons_vector_sequence_label_is_never_written_over(
    tmp_path: Path, emulator: Emulator, segments_client: SegmentsClient, tiny_models_dir: Path
) -> None:
    clips = {"human": list(moving_shapes(2, seed=6)), "open": list(moving_shapes(2, seed=7))}
    seeded = seed_sequence_dataset(
        emulator, DATASET, clips, DEMO_CATEGORIES, task_type="image-vector-sequence"
    )
    human, open_ = seeded.sample_uuids
    box = {
        "id": 1,
        "track_id": 1,
        "category_id": 1,
        "is_keyframe": True,
        "type": "bbox",
        "points": [[1.0, 1.0], [5.0, 5.0]],
    }
    mine = {"frames": [{"annotations": [box]}, {"annotations": [box]}]}
    emulator.write_label(human, GT, mine, label_status="LABELED")

    result = invoke(tmp_path, emulator.url, DATASET, models=tiny_models_dir)

    assert result.exit_code == 0, result.output
    assert emulator.get_label(human)["attributes"] == mine
    assert emulator.label_write_counts() == {(open_, GT): 1}
    assert_valid_vector_sequence(segments_client, open_, clips["open"], "bbox")


@pytest.mark.usefixtures("persistent_sam2")
def test_evaluate_scores_every_frame_of_a_box_sequence_as_an_image(
    tmp_path: Path,
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models_dir: Path,
) -> None:
    """Known answer: a person accepts the labels a run wrote (LABELED); the same models
    predict the same boxes again, so AP is 1 over every frame of every sequence, and the
    evaluation writes nothing. A sequence without a person's label is not evaluated."""
    import json

    from click.testing import CliRunner

    from prelabel.cli.evaluate import evaluate

    clips = {"walk": list(moving_shapes(4, seed=12)), "other": list(moving_shapes(3, seed=3))}
    seeded = seed_sequence_dataset(
        emulator, DATASET, clips, DEMO_CATEGORIES, task_type="image-vector-sequence"
    )
    config = write_config(tmp_path / "config.yaml", sequence=SEQUENCE)
    ran = invoke(tmp_path, emulator.url, DATASET, models=tiny_models_dir, config=config)
    assert ran.exit_code == 0, ran.output
    walk, other = seeded.sample_uuids
    frames = assert_valid_vector_sequence(segments_client, walk, clips["walk"], "bbox")
    assert sum(len(f) for f in frames) >= 4, frames
    emulator.set_label_status(walk, GT, "LABELED")
    writes = emulator.label_write_counts()
    out = tmp_path / "ap.json"

    result = CliRunner().invoke(
        evaluate,
        [
            *("--dataset", DATASET, "--api-url", emulator.url, "--config", str(config)),
            *("--models", str(tiny_models_dir), "--out", str(out), "-q"),
        ],
        env={"SEGMENTS_API_KEY": EMULATOR_API_KEY},
    )

    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert document["metric"] == "COCO AP (bbox)"
    assert document["images"] == len(clips["walk"])  # every frame, of the labeled one only
    assert document["not_human_labeled"] == 1 and document["failures"] == []
    assert document["ap"] == pytest.approx(1.0) and document["ap50"] == pytest.approx(1.0)
    assert emulator.label_write_counts() == writes  # read-only
    assert emulator.get_label(other)["label_status"] == "PRELABELED"  # type: ignore[index]
