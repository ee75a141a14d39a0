"""``prelabel evaluate`` through click: the table, the JSON file, and exit code 2 on bad input."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from prelabel.cli.evaluate import evaluate
from prelabel.emulator import Emulator
from prelabel.evaluate.exports import evaluate_coco_dirs
from tests.connector_helpers import SAM3_PIPELINE, write_config
from tests.fixtures.emulator import DEMO_CATEGORIES, EMULATOR_API_KEY, png_bytes
from tests.test_evaluate import GT_IMAGES, PRED_IMAGES, write_export
from tests.test_evaluation_run import (
    DATASET,
    Labeled,
    add_labeled_sample,
    add_sample,
    demo_taxonomy,
)

if TYPE_CHECKING:
    from prelabel.pipeline.pipeline import Pipeline
    from prelabel.taxonomy import Taxonomy


@pytest.fixture
def exports(tmp_path: Path) -> tuple[Path, Path]:
    return (
        write_export(tmp_path / "pred", PRED_IMAGES),
        write_export(tmp_path / "gt", GT_IMAGES),
    )


def invoke(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(evaluate, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_prints_the_table_and_writes_json_beside_the_predictions(
    exports: tuple[Path, Path],
) -> None:
    pred_dir, gt_dir = exports

    code, stdout, stderr = invoke("--predictions", pred_dir, "--ground-truth", gt_dir, "-q")

    assert code == 0, stderr
    rows = {line.split()[0]: line.split() for line in stdout.splitlines() if line.strip()}
    assert rows["person"][1:] == ["thing", "66.7", "100.0", "66.7", "1", "0", "1"]
    assert rows["tree"][2:5] == ["-", "-", "-"]
    assert {"All", "Things", "Stuff"} <= rows.keys()
    written = pred_dir / "evaluation.json"
    assert f"wrote {written}" in stderr
    document = json.loads(written.read_text())
    assert document["predictions"] == str(pred_dir / "panoptic.json")
    assert document["ground_truth"] == str(gt_dir / "panoptic.json")
    expected = evaluate_coco_dirs(pred_dir, gt_dir).as_dict()
    assert {k: v for k, v in document.items() if k in expected} == expected


def test_out_option_and_json_file_paths(exports: tuple[Path, Path], tmp_path: Path) -> None:
    pred_dir, gt_dir = exports
    out = tmp_path / "results" / "pq.json"

    code, _, stderr = invoke(
        "--predictions",
        pred_dir / "panoptic.json",
        "--ground-truth",
        gt_dir / "panoptic",
        "--out",
        out,
        "-q",
    )

    assert code == 0, stderr
    assert json.loads(out.read_text())["images"] == 2
    assert not (pred_dir / "evaluation.json").exists()


def test_rerun_finds_the_same_export_despite_its_own_result_file(
    exports: tuple[Path, Path],
) -> None:
    pred_dir, gt_dir = exports
    first = invoke("--predictions", pred_dir, "--ground-truth", gt_dir, "-q")
    second = invoke("--predictions", pred_dir, "--ground-truth", gt_dir, "-q")
    assert (first[0], second[0]) == (0, 0)
    assert first[1] == second[1]


def test_mismatched_images_exit_2_with_one_line(exports: tuple[Path, Path]) -> None:
    pred_dir, gt_dir = exports
    document = json.loads((gt_dir / "panoptic.json").read_text())
    document["annotations"] = document["annotations"][:1]
    (gt_dir / "panoptic.json").write_text(json.dumps(document))

    code, stdout, stderr = invoke("--predictions", pred_dir, "--ground-truth", gt_dir, "-q")

    assert code == 2
    assert stdout == ""
    assert len(stderr.strip().splitlines()) == 1
    assert "1 predicted images have no ground truth: 'sub/b.jpg'" in stderr
    assert not (pred_dir / "evaluation.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--predictions", "{pred}"], "give both", id="ground-truth-missing"),
        pytest.param(
            ["--predictions", "{tmp}/nope", "--ground-truth", "{gt}"],
            "nope: no such file or folder",
            id="missing-dir",
        ),
        pytest.param(
            ["--predictions", "{pred}", "--ground-truth", "{tmp}/broken.json"],
            "broken.json: not valid JSON",
            id="unreadable-json",
        ),
    ],
)
def test_bad_input_exits_2(
    exports: tuple[Path, Path], tmp_path: Path, args: list[str], message: str
) -> None:
    pred_dir, gt_dir = exports
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "broken").mkdir()
    filled = [a.format(pred=pred_dir, gt=gt_dir, tmp=tmp_path) for a in args]

    code, _, stderr = invoke(*filled)

    assert code == 2
    assert message in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_help_has_an_example() -> None:
    code, stdout, _ = invoke("--help")
    assert code == 0
    assert "Example:" in stdout
    assert "prelabel evaluate --predictions" in stdout


# --dataset mode: against the emulator ----------------------------------------------------------


@pytest.fixture
def restore_log_record_factory() -> Iterator[None]:
    """--dataset installs a key-redacting record factory process-wide; undo it after a test."""
    factory = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(factory)


def dataset_labeled_as(emulator: Emulator, pipeline: Pipeline, taxonomy: Taxonomy) -> Labeled:
    """``jane/eval`` with one sample ``a.png`` whose human label is exactly what ``pipeline``
    predicts for it."""
    emulator.create_dataset(DATASET, categories=list(DEMO_CATEGORIES))
    return add_labeled_sample(emulator, pipeline, taxonomy, "a.png", seed=1)


@pytest.fixture
def labeled_dataset(emulator: Emulator, pipeline: Pipeline) -> tuple[str, str]:
    """``jane/eval`` with one sample labeled exactly as the tiny pipeline predicts it and one
    unlabeled sample; returns the labeled sample's uuid and the name of its first category."""
    taxonomy = demo_taxonomy()
    labeled = dataset_labeled_as(emulator, pipeline, taxonomy)
    add_sample(emulator, "b.png", png_bytes(48, 32, seed=2))
    first = taxonomy.category(labeled.prediction.segments[0].category_id)
    return labeled.uuid, first.name


def invoke_dataset(*args: str | Path, key: str | None = EMULATOR_API_KEY) -> tuple[int, str, str]:
    env = {"SEGMENTS_API_KEY": key} if key is not None else {}
    result = CliRunner().invoke(evaluate, [str(a) for a in args], env=env)
    return result.exit_code, result.stdout, result.stderr


def evaluate_dataset(
    emulator: Emulator, config: Path, models: Path, *extra: str | Path
) -> tuple[int, str, str]:
    """``prelabel evaluate --dataset jane/eval`` on the emulator with ``config`` and the models
    of ``models``, quiet."""
    common = ["--dataset", DATASET, "--api-url", emulator.url, "--config", config]
    return invoke_dataset(*common, "--models", models, *extra, "-q")


@pytest.mark.slow
@pytest.mark.usefixtures("restore_log_record_factory")
def test_dataset_mode_scores_human_labels_and_writes_json_in_the_current_folder(
    emulator: Emulator,
    labeled_dataset: tuple[str, str],
    tiny_models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, category = labeled_dataset
    config = write_config(tmp_path / "config.yaml")
    monkeypatch.chdir(tmp_path)
    emulator.clear_requests()

    code, stdout, stderr = evaluate_dataset(emulator, config, tiny_models_dir)

    assert code == 0, stderr
    rows = {line.split()[0]: line.split() for line in stdout.splitlines() if line.strip()}
    assert rows[category][2:5] == ["100.0", "100.0", "100.0"]
    assert rows["All"][1] == "100.0"
    written = Path("evaluation-jane-eval.json")
    assert f"wrote {written}" in stderr
    document = json.loads((tmp_path / written).read_text())
    assert document["dataset"] == DATASET and document["labelset"] == "ground-truth"
    assert document["samples"] == {"evaluated": 1, "failed": 0, "not_human_labeled": 1}
    assert document["failures"] == [] and document["images"] == 1
    assert document["overall"]["pq"] == 1.0
    assert document["pipeline"]["box_threshold"] == 0.0
    assert {r.method for r in emulator.requests} == {"GET"}
    assert emulator.label_write_counts() == {}


@pytest.mark.slow
@pytest.mark.usefixtures("restore_log_record_factory")
def test_dataset_mode_with_the_sam3_backend_scores_labels_it_made(
    emulator: Emulator,
    tiny_sam3_pipeline: Pipeline,
    tiny_models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``models.backend: sam3`` end to end: a human label equal to the tiny SAM 3's prediction
    scores 100 only if evaluate predicts through SAM 3 with the configured thresholds."""
    from prelabel.backends import option_reader
    from prelabel.config import Settings
    from prelabel.taxonomy import build_taxonomy, categories_from_task_attributes

    settings = Settings.model_validate({"models": {"backend": "sam3"}})
    taxonomy = build_taxonomy(
        categories_from_task_attributes({"categories": list(DEMO_CATEGORIES)}),
        {},
        SAM3_PIPELINE,
        reader=option_reader(settings),
    )
    labeled = dataset_labeled_as(emulator, tiny_sam3_pipeline, taxonomy)
    # Things and stuff both, so a back-end that lost either branch scores below 100.
    assert {s.is_thing for s in labeled.prediction.segments} == {True, False}
    config = write_config(tmp_path / "config.yaml", pipeline=SAM3_PIPELINE, backend="sam3")
    monkeypatch.chdir(tmp_path)

    code, _, stderr = evaluate_dataset(emulator, config, tiny_models_dir)

    assert code == 0, stderr
    document = json.loads((tmp_path / "evaluation-jane-eval.json").read_text())
    assert document["samples"]["evaluated"] == 1 and document["overall"]["pq"] == 1.0
    assert document["pipeline"]["score_threshold"] == 0.0


@pytest.mark.slow
@pytest.mark.usefixtures("restore_log_record_factory")
def test_dataset_mode_exits_1_and_lists_samples_it_could_not_evaluate(
    emulator: Emulator,
    labeled_dataset: tuple[str, str],
    tiny_models_dir: Path,
    tmp_path: Path,
) -> None:
    broken = add_sample(emulator, "broken.png", png_bytes(48, 32, seed=3))
    emulator.set_label_status(broken, "ground-truth", "REVIEWED")
    out = tmp_path / "pq.json"

    config = write_config(tmp_path / "config.yaml")
    code, stdout, stderr = evaluate_dataset(emulator, config, tiny_models_dir, "--out", out)

    assert code == 1, stderr
    assert "All" in stdout
    assert "1 samples could not be evaluated" in stderr
    document = json.loads(out.read_text())
    assert document["samples"] == {"evaluated": 1, "failed": 1, "not_human_labeled": 1}
    assert document["failures"] == [
        {
            "sample_uuid": broken,
            "sample_name": "broken.png",
            "reason": "the label has no segmentation bitmap",
        }
    ]


@pytest.mark.usefixtures("restore_log_record_factory")
def test_dataset_mode_without_a_key_exits_2_before_any_request(emulator: Emulator) -> None:
    code, stdout, stderr = invoke_dataset("--dataset", DATASET, "--api-url", emulator.url, key=None)

    assert code == 2
    assert stdout == ""
    assert "SEGMENTS_API_KEY" in stderr and len(stderr.strip().splitlines()) == 1
    assert emulator.requests == []


@pytest.mark.usefixtures("restore_log_record_factory")
def test_dataset_mode_names_a_missing_labelset(emulator: Emulator) -> None:
    emulator.create_dataset(DATASET, categories=list(DEMO_CATEGORIES))

    code, _, stderr = invoke_dataset(
        "--dataset", DATASET, "--api-url", emulator.url, "--labelset", "nope"
    )

    assert code == 2
    assert "has no labelset 'nope'" in stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--dataset", "jane/eval", "--predictions", "{pred}"],
            "not both",
            id="both-modes",
        ),
        pytest.param(
            ["--dataset", "jane/eval", "--ground-truth", "{gt}"],
            "not both",
            id="dataset-and-ground-truth",
        ),
        pytest.param([], "give --dataset OWNER/NAME", id="no-mode"),
        pytest.param(
            ["--predictions", "{pred}", "--ground-truth", "{gt}", "--limit", "3"],
            "--limit only apply with --dataset",
            id="dataset-option-in-local-mode",
        ),
        pytest.param(["--dataset", "no-owner"], "OWNER/NAME", id="bad-dataset-name"),
    ],
)
def test_modes_are_exclusive_and_checked_before_the_key(
    exports: tuple[Path, Path], args: list[str], message: str
) -> None:
    pred_dir, gt_dir = exports
    filled = [a.format(pred=pred_dir, gt=gt_dir) for a in args]

    code, stdout, stderr = invoke_dataset(*filled, key=None)

    assert code == 2
    assert stdout == ""
    assert message in stderr and "SEGMENTS_API_KEY" not in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_help_shows_the_dataset_mode() -> None:
    wide = {"terminal_width": 200, "max_content_width": 200}  # no wrapping inside the names
    result = CliRunner().invoke(evaluate, ["--help"], **wide)
    code, stdout = result.exit_code, result.stdout
    assert code == 0
    assert "prelabel evaluate --dataset" in stdout
    assert "evaluation-OWNER-NAME.json" in stdout
