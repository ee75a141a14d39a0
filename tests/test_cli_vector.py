"""``prelabel run`` (the command) on box and polygon datasets: exit codes, dry runs, faults,
and ``kill -9`` then a rerun. Emulator, real SDK, tiny random-weight models (what they find is
random; the label rules of shared/segments-api.md 12.2 and the once-only writes are not)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from segments import SegmentsClient
from segments.typing import ImageVectorLabelAttributes

from prelabel.cli.evaluate import evaluate
from prelabel.emulator import Emulator, FaultRule
from prelabel.segments.upload import NO_ASSET
from prelabel.state import UPLOADED
from tests.connector_helpers import read_report, write_config
from tests.fixtures.emulator import DEMO_CATEGORIES, EMULATOR_API_KEY, seed_dataset_via_sdk
from tests.test_cli_run import _restore_log_record_factory, invoke  # noqa: F401
from tests.test_resume_kill import HANG, KEY, Runner, _stage

pytestmark = pytest.mark.slow

GT = "ground-truth"
CATEGORY_IDS = {c["id"] for c in DEMO_CATEGORIES}


def assert_valid(client: SegmentsClient, uuid: str, kind: str, size: tuple[int, int]) -> int:
    """The label obeys section 12.2 for ``kind``; returns its annotation count."""
    label = client.get_label(uuid, labelset=GT)
    assert str(getattr(label.label_status, "value", label.label_status)) == "PRELABELED"
    annotations = ImageVectorLabelAttributes.model_validate(
        label.attributes.model_dump()
    ).annotations
    width, height = size
    for a in annotations:
        points = np.array(a.points, dtype=float)
        assert a.type == kind and a.category_id in CATEGORY_IDS
        assert (points >= 0).all() and (points <= [width, height]).all()
        if kind == "bbox":
            assert len(points) == 2 and (points[0] <= points[1]).all()
        else:
            assert len(points) >= 3 and not np.array_equal(points[0], points[-1])
    assert len({a.id for a in annotations}) == len(annotations)
    return len(annotations)


@pytest.mark.parametrize(("task_type", "kind"), [("bboxes", "bbox"), ("vector", "polygon")])
def test_run_labels_a_vector_dataset_and_exits_0(
    tmp_path: Path,
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models_dir: Path,
    task_type: str,
    kind: str,
) -> None:
    seeded = seed_dataset_via_sdk(segments_client, task_type, task_type=task_type)
    # PUTs fail twice: retried, and still one write per sample.
    emulator.set_faults([FaultRule(path="/labels/*", method="PUT", error_rate=1.0, times=2)])

    result = invoke(tmp_path, emulator.url, seeded.full_name, models=tiny_models_dir)

    assert result.exit_code == 0, result.output
    objects = [
        assert_valid(segments_client, u, kind, seeded.image_size) for u in seeded.sample_uuids
    ]
    assert sum(objects) > 0, "the tiny models found nothing: the checks above were vacuous"
    assert emulator.label_write_counts() == {(u, GT): 1 for u in seeded.sample_uuids}
    assert emulator.asset_upload_count() == len(seeded.sample_uuids)  # the images only
    report = read_report(tmp_path / "out" / "report.json")
    assert [s["result"] for s in report["samples"]] == ["labeled"] * len(seeded.sample_uuids)
    assert [s["segments"] for s in report["samples"]] == objects


def test_a_dry_run_saves_the_labels_and_writes_nothing(
    tmp_path: Path, emulator: Emulator, segments_client: SegmentsClient, tiny_models_dir: Path
) -> None:
    seeded = seed_dataset_via_sdk(segments_client, "boxes", task_type="bboxes")

    result = invoke(tmp_path, emulator.url, seeded.full_name, "--dry-run", models=tiny_models_dir)

    assert result.exit_code == 0, result.output
    assert emulator.label_write_counts() == {}
    for uuid in seeded.sample_uuids:
        saved: dict[str, Any] = json.loads(
            (tmp_path / "out" / "dry-run" / f"{uuid}.json").read_text(encoding="utf-8")
        )
        assert saved["label_status"] == "PRELABELED"
        ImageVectorLabelAttributes.model_validate(saved["attributes"])
        assert {a["type"] for a in saved["attributes"]["annotations"]} <= {"bbox"}
    assert not list((tmp_path / "out" / "dry-run").glob("*.png"))


def test_a_sample_whose_writes_keep_failing_fails_the_run_with_exit_1(
    tmp_path: Path, emulator: Emulator, segments_client: SegmentsClient, tiny_models_dir: Path
) -> None:
    seeded = seed_dataset_via_sdk(segments_client, "shapes", n_images=2, task_type="vector")
    first = seeded.sample_uuids[0]
    emulator.set_faults([FaultRule(path=f"/labels/{first}/*", method="PUT", error_rate=1.0)])
    config = write_config(tmp_path / "config.yaml", vector={"stuff": "skip"})

    result = invoke(tmp_path, emulator.url, seeded.full_name, models=tiny_models_dir, config=config)

    assert result.exit_code == 1, result.output
    outcomes = {
        s["sample_uuid"]: s["result"]
        for s in read_report(tmp_path / "out" / "report.json")["samples"]
    }
    assert outcomes == {first: "failed", seeded.sample_uuids[1]: "labeled"}
    assert emulator.get_label(first) is None
    # Its label was made before the write failed: the rerun writes it without predicting.
    assert _stage(tmp_path, seeded.full_name, first) == (UPLOADED, NO_ASSET)
    emulator.clear_faults()
    again = invoke(tmp_path, emulator.url, seeded.full_name, models=tiny_models_dir, config=config)
    assert again.exit_code == 0, again.output
    assert emulator.label_write_counts() == {(u, GT): 1 for u in seeded.sample_uuids}


def test_kill_9_before_the_label_write_then_rerun_writes_each_label_once(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    with Emulator(KEY) as emulator:
        client = SegmentsClient(KEY, api_url=emulator.url)
        seeded = seed_dataset_via_sdk(client, n_images=3, task_type="vector")
        s = seeded.sample_uuids
        runner = Runner(tmp_path, emulator, seeded.full_name, tiny_models_dir)

        # Killed while s0's label write hangs: its label is made and recorded, not written.
        emulator.set_faults([FaultRule(path="/labels/*", method="PUT", hang_rate=1.0, hang_s=HANG)])
        runner.kill_when(runner.start(), runner.hung("PUT", "/labels/"), "s0's label write")
        assert _stage(tmp_path, seeded.full_name, s[0]) == (UPLOADED, NO_ASSET)
        assert emulator.label_write_counts() == {}

        emulator.clear_faults()
        process = runner.start()
        assert process.wait(timeout=120) == 0, (tmp_path / "run2" / "stderr.txt").read_text()

        assert emulator.label_write_counts() == {(u, GT): 1 for u in s}
        for uuid in s:
            assert_valid(client, uuid, "polygon", seeded.image_size)
        client.close()


@pytest.mark.usefixtures("_restore_log_record_factory")
def test_evaluate_scores_a_bboxes_dataset_with_coco_ap(
    tmp_path: Path,
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The labels a run wrote, accepted by a person as they are: the same models score AP 1
    on every category they found (the tiny models are deterministic), read-only."""
    seeded = seed_dataset_via_sdk(segments_client, "boxes", task_type="bboxes")
    assert invoke(tmp_path, emulator.url, seeded.full_name, models=tiny_models_dir).exit_code == 0
    for uuid in seeded.sample_uuids:
        emulator.set_label_status(uuid, GT, "LABELED")
    monkeypatch.chdir(tmp_path)
    emulator.clear_requests()
    args = ["--dataset", seeded.full_name, "--api-url", emulator.url, "--config"]
    args += [str(tmp_path / "config.yaml"), "--models", str(tiny_models_dir), "-q"]

    result = CliRunner().invoke(evaluate, args, env={"SEGMENTS_API_KEY": EMULATOR_API_KEY})

    assert result.exit_code == 0, result.stderr
    document = json.loads((tmp_path / "evaluation-jane-boxes.json").read_text())
    assert document["metric"] == "COCO AP (bbox)" and document["images"] == 3
    measured = [v for v in document["per_category"].values() if v == v]  # not NaN
    assert measured and all(v == pytest.approx(1.0) for v in measured)
    assert document["ap"] == pytest.approx(1.0) and document["failures"] == []
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    assert rows["AP50"] == ["AP50", "100.0"]
    assert {r.method for r in emulator.requests} == {"GET"}
