"""``prelabel run`` / ``sync`` on image-sequence datasets: emulator, real SDK, tiny models.

Every label read back is checked against spec 10.6 (shared/segments-api.md): one label frame
per sample frame, each frame's bitmap at the frame's size with exactly its annotations' ids,
``id == track_id``, one category per track, every stuff category at most one segment per frame
with one id for the whole sequence, ``is_keyframe`` on what the model produced, timestamps
copied from the sample. What the model finds is random (tiny weights); these rules are not.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from segments import SegmentsClient
from segments.utils import load_label_bitmap_from_url

from prelabel.cli import main
from prelabel.emulator import Emulator, FaultRule
from prelabel.emulator.sequences import (
    FrameScene,
    frame_timestamp,
    moving_shapes,
    seed_sequence_dataset,
    write_sequence_ground_truth,
)
from prelabel.state import StateStore
from tests.connector_helpers import read_report, requests_matching, url_path, write_config
from tests.fixtures.emulator import DEMO_CATEGORIES, EMULATOR_API_KEY
from tests.test_cli_run import _restore_log_record_factory, invoke  # noqa: F401

GT = "ground-truth"
DATASET = "jane/clips"
THINGS = {c["id"] for c in DEMO_CATEGORIES if c["has_instances"]}
STUFF = {c["id"] for c in DEMO_CATEGORIES if not c["has_instances"]}
#: Keyframes every 2 frames, so detections on later keyframes meet live tracks.
SEQUENCE = {"keyframe_interval": 2}
REPO = Path(__file__).resolve().parents[1]


def seed(emulator: Emulator, clips: dict[str, list[FrameScene | None]]) -> dict[str, str]:
    seeded = seed_sequence_dataset(emulator, DATASET, clips, DEMO_CATEGORIES)
    return dict(zip(clips, seeded.sample_uuids, strict=True))


def assert_valid_sequence_prelabel(
    client: SegmentsClient, uuid: str, clip: list[FrameScene | None]
) -> list[dict[str, Any]]:
    """The label of ``uuid`` obeys spec 10.6; returns its frames (as dicts)."""
    label = client.get_label(uuid, labelset=GT)
    assert str(getattr(label.label_status, "value", label.label_status)) == "PRELABELED"
    assert label.attributes is not None
    frames = label.attributes.model_dump()["frames"]
    assert len(frames) == len(clip)
    category_of: dict[int, int] = {}
    stuff_ids: dict[int, set[int]] = defaultdict(set)
    for index, (frame, scene) in enumerate(zip(frames, clip, strict=True)):
        assert scene is not None
        assert frame["timestamp"] == frame_timestamp(index)
        bitmap = load_label_bitmap_from_url(frame["segmentation_bitmap"]["url"])
        assert bitmap.shape == scene.id_map.shape, f"frame {index}"
        annotations = frame["annotations"]
        ids = [a["id"] for a in annotations]
        assert len(set(ids)) == len(ids)
        assert {int(i) for i in set(bitmap.ravel().tolist())} - {0} == set(ids), f"frame {index}"
        for a in annotations:
            assert a["track_id"] == a["id"] and a["is_keyframe"] is True
            assert category_of.setdefault(a["id"], a["category_id"]) == a["category_id"]
        per_stuff = [a["category_id"] for a in annotations if a["category_id"] in STUFF]
        assert len(per_stuff) == len(set(per_stuff)), f"frame {index}: a stuff class twice"
        for a in annotations:
            if a["category_id"] in STUFF:
                stuff_ids[a["category_id"]].add(a["id"])
    assert all(len(ids) == 1 for ids in stuff_ids.values()), stuff_ids
    assert set(category_of.values()) <= THINGS | STUFF
    assert category_of, "the tiny pipeline found nothing: the checks above were vacuous"
    return frames


def test_run_labels_every_frame_with_ids_that_are_track_ids(
    tmp_path: Path, emulator: Emulator, segments_client: SegmentsClient, tiny_models_dir: Path
) -> None:
    clips: dict[str, list[FrameScene | None]] = {
        "walk": list(moving_shapes(5, seed=1)),
        "resized": list(moving_shapes(3, seed=2, sizes=[(64, 48), (80, 60), (48, 64)])),
        "quiet": list(moving_shapes(3, seed=3, empty_frames={1})),
    }
    uuids = seed(emulator, clips)
    config = write_config(tmp_path / "config.yaml", sequence=SEQUENCE)

    result = invoke(tmp_path, emulator.url, DATASET, models=tiny_models_dir, config=config)

    assert result.exit_code == 0, result.output
    for name, uuid in uuids.items():
        assert_valid_sequence_prelabel(segments_client, uuid, clips[name])
    assert emulator.label_write_counts() == {(u, GT): 1 for u in uuids.values()}
    report = read_report(tmp_path / "out" / "report.json")
    outcomes = {o["sample_name"]: o for o in report["samples"]}
    assert {n: o["result"] for n, o in outcomes.items()} == dict.fromkeys(uuids, "labeled")
    # A rerun finds nothing to do: every sequence has our label.
    again = invoke(tmp_path, emulator.url, DATASET, models=tiny_models_dir, config=config)
    assert again.exit_code == 0, again.output
    assert emulator.label_write_counts() == {(u, GT): 1 for u in uuids.values()}


def test_tracked_objects_keep_their_id_in_every_frame_of_the_label(
    tmp_path: Path,
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the whole run (upload, label write, read back) with a deterministic stand-in
    for SAM 2: objects stay where they were prompted (tiny random SAM 2 weights lose every
    object after its first frame). The matching itself is tests/test_tracks.py's."""
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
    clip: list[FrameScene | None] = list(moving_shapes(5, seed=12))
    uuid = seed(emulator, {"walk": clip})["walk"]
    config = write_config(tmp_path / "config.yaml", sequence=SEQUENCE)

    result = invoke(tmp_path, emulator.url, DATASET, models=tiny_models_dir, config=config)

    assert result.exit_code == 0, result.output
    frames = assert_valid_sequence_prelabel(segments_client, uuid, clip)
    things = [{a["id"] for a in f["annotations"] if a["category_id"] in THINGS} for f in frames]
    assert things[0], "nothing detected on frame 0"
    # A frame-0 object is tracked through every frame with one id (others may lose their
    # pixels to an overlapping keyframe detection that scored higher: the merge's rule).
    assert set.intersection(*things), things
    # An id is one object: from one frame to the next it keeps (some of) its pixels, and into
    # a non-keyframe (1, 3), where nothing new is detected, most of them (the stand-in does
    # not move objects; on a keyframe a higher-scored new detection may take some).
    bitmaps = [load_label_bitmap_from_url(f["segmentation_bitmap"]["url"]) for f in frames]
    for k in range(len(frames) - 1):
        for track in things[k] & things[k + 1]:
            here, there = bitmaps[k] == track, bitmaps[k + 1] == track
            iou = (here & there).sum() / (here | there).sum()
            assert iou >= (0.5 if k + 1 in (1, 3) else 0.05), (k, track, iou)
    # A keyframe (2, 4) detection that starts a track gets an id never used before.
    seen: set[int] = set()
    for ids in things:
        new = ids - seen
        assert not seen or not new or min(new) > max(seen), things
        seen |= ids


def test_a_frame_that_cannot_be_read_fails_its_sequence_by_name_and_the_run_goes_on(
    tmp_path: Path, emulator: Emulator, segments_client: SegmentsClient, tiny_models_dir: Path
) -> None:
    good = list(moving_shapes(3, seed=4))
    broken: list[FrameScene | None] = [*moving_shapes(3, seed=5)]
    broken[1] = None  # its URL answers 404
    uuids = seed(emulator, {"broken": broken, "good": good})

    result = invoke(tmp_path, emulator.url, DATASET, models=tiny_models_dir)

    assert result.exit_code == 1, result.output
    report = read_report(tmp_path / "out" / "report.json")
    outcomes = {o["sample_name"]: o for o in report["samples"]}
    assert outcomes["broken"]["result"] == "failed"
    assert "frame 1 (frame_00001)" in outcomes["broken"]["reason"]
    assert "404" in outcomes["broken"]["reason"]
    assert outcomes["good"]["result"] == "labeled"
    assert_valid_sequence_prelabel(segments_client, uuids["good"], good)
    assert emulator.label_write_counts() == {(uuids["good"], GT): 1}


def test_a_persons_sequence_label_is_never_written_over(
    tmp_path: Path, emulator: Emulator, segments_client: SegmentsClient, tiny_models_dir: Path
) -> None:
    clip = moving_shapes(3, seed=6)
    uuids = seed(emulator, {"human": list(clip), "open": list(moving_shapes(3, seed=7))})
    write_sequence_ground_truth(emulator, uuids["human"], clip, label_status="LABELED")
    before = emulator.get_label(uuids["human"])
    writes_before = emulator.label_write_counts()

    result = invoke(
        tmp_path, emulator.url, DATASET, "--overwrite-prelabels", models=tiny_models_dir
    )

    assert result.exit_code == 0, result.output
    assert emulator.get_label(uuids["human"]) == before
    writes = emulator.label_write_counts()
    assert writes.get((uuids["human"], GT)) == writes_before.get((uuids["human"], GT))
    assert writes[(uuids["open"], GT)] == 1


def test_dry_run_writes_each_frame_locally_and_nothing_to_the_server(
    tmp_path: Path, emulator: Emulator, tiny_models_dir: Path
) -> None:
    clip = list(moving_shapes(3, seed=8))
    uuids = seed(emulator, {"walk": clip})
    uploads = emulator.asset_upload_count()

    result = invoke(tmp_path, emulator.url, DATASET, "--dry-run", models=tiny_models_dir)

    assert result.exit_code == 0, result.output
    assert emulator.asset_upload_count() == uploads and emulator.label_write_counts() == {}
    folder = tmp_path / "out" / "dry-run"
    pngs = sorted(p.name for p in (folder / uuids["walk"]).iterdir())
    assert pngs == ["frame-00000.png", "frame-00001.png", "frame-00002.png"]
    payload = read_report(folder / f"{uuids['walk']}.json")
    frames = payload["attributes"]["frames"]
    assert len(frames) == 3
    # what a real run would write, timestamps included: the payload is a preview of the label
    assert [f.get("timestamp") for f in frames] == [frame_timestamp(i) for i in range(3)]


def test_sync_once_labels_sequences_like_run(
    tmp_path: Path, emulator: Emulator, segments_client: SegmentsClient, tiny_models_dir: Path
) -> None:
    clip = list(moving_shapes(3, seed=9))
    uuids = seed(emulator, {"walk": clip})
    from click.testing import CliRunner

    args = [
        "sync",
        "--dataset",
        DATASET,
        "--once",
        "--api-url",
        emulator.url,
        "--state-dir",
        str(tmp_path / "state"),
        "--output-dir",
        str(tmp_path / "out"),
        "--config",
        str(write_config(tmp_path / "config.yaml")),
        "--models",
        str(tiny_models_dir),
        "-q",
    ]
    result = CliRunner().invoke(main, args, env={"SEGMENTS_API_KEY": EMULATOR_API_KEY})

    assert result.exit_code == 0, result.output
    assert_valid_sequence_prelabel(segments_client, uuids["walk"], clip)


def _frames_in_state(tmp_path: Path, uuid: str) -> dict[int, dict[str, Any]]:
    store = StateStore.in_dir(tmp_path / "state")
    try:
        return store.uploaded_frames(DATASET, GT, uuid)
    finally:
        store.close()


@pytest.mark.slow
def test_kill_9_mid_sequence_then_rerun_reuses_the_uploaded_frames_and_writes_once(
    tmp_path: Path, emulator: Emulator, segments_client: SegmentsClient, tiny_models_dir: Path
) -> None:
    clip = list(moving_shapes(4, seed=10))
    uuid = seed(emulator, {"walk": clip})["walk"]
    frame_urls = [f.image.url for f in segments_client.get_sample(uuid).attributes.frames]
    seeded_uploads = emulator.asset_upload_count()
    config = write_config(tmp_path / "config.yaml")
    base = [
        sys.executable,
        "-m",
        "prelabel",
        "run",
        "--dataset",
        DATASET,
        "--api-url",
        emulator.url,
        "--models",
        str(tiny_models_dir),
        "--state-dir",
        str(tmp_path / "state"),
        "--config",
        str(config),
        "-q",
    ]
    env = {**os.environ, "SEGMENTS_API_KEY": EMULATOR_API_KEY}

    # Frame 2's download hangs: the run cannot predict past frame 1, and is killed once
    # frames 0 and 1 are uploaded and recorded (their uploads may trail the download).
    frame2 = url_path(frame_urls[2])
    emulator.set_faults([FaultRule(path=frame2, method="GET", hang_rate=1.0, hang_s=120.0)])
    log = (tmp_path / "run1.txt").open("wb")
    process = subprocess.Popen(
        [*base, "--output-dir", str(tmp_path / "run1")], cwd=REPO, env=env, stderr=log
    )
    deadline = time.monotonic() + 90
    while not (
        requests_matching(emulator, "GET", frame2, fault="hang")
        and len(_frames_in_state(tmp_path, uuid)) == 2
    ):
        assert process.poll() is None, (tmp_path / "run1.txt").read_text()
        assert time.monotonic() < deadline, "frame 2's download never started"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    log.close()
    recorded = _frames_in_state(tmp_path, uuid)
    assert sorted(recorded) == [0, 1]
    status = CliRunner().invoke(
        main, ["status", "--dataset", DATASET, "--state-dir", str(tmp_path / "state")]
    )
    assert f"{uuid}: 2 frames uploaded, label not written yet" in status.output, status.output
    uploads_before_rerun = emulator.asset_upload_count() - seeded_uploads
    assert emulator.label_write_counts() == {}

    emulator.clear_faults()
    rerun = subprocess.run(
        [*base, "--output-dir", str(tmp_path / "run2")], cwd=REPO, env=env, capture_output=True
    )

    assert rerun.returncode == 0, rerun.stderr.decode()[-3000:]
    assert emulator.label_write_counts() == {(uuid, GT): 1}
    frames = assert_valid_sequence_prelabel(segments_client, uuid, clip)
    for index in (0, 1):
        assert frames[index]["segmentation_bitmap"]["url"] == recorded[index]["label"]["asset_url"]
    # Only frames 2 and 3 were uploaded by the rerun (a frame without objects may share one
    # empty bitmap, so at most two new assets).
    assert emulator.asset_upload_count() - seeded_uploads - uploads_before_rerun <= 2
    assert _frames_in_state(tmp_path, uuid) == {}  # dropped once the label is written
