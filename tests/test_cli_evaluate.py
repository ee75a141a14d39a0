"""``prelabel evaluate`` through click: the table, the JSON file, and exit code 2 on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from prelabel.cli.evaluate import evaluate
from prelabel.evaluate import evaluate_coco_dirs
from tests.test_evaluate import GT_IMAGES, PRED_IMAGES, write_export


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
