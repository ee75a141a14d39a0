"""``prelabel models tiny`` and ``prelabel models convert-sam`` through click, checked on disk."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from transformers import SamModel

from prelabel.backends import load_backend
from prelabel.backends.grounded_sam.loading import MODEL_SUBDIRS, load_models
from prelabel.backends.sam2_video.loading import load_sam2_video
from prelabel.cli import main
from prelabel.config import ModelSettings, Settings
from tests.fixtures.models import write_original_sam_checkpoint


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_tiny_writes_a_loadable_models_dir(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "models-tiny"
    result = runner.invoke(main, ["models", "tiny", str(out)])
    assert result.exit_code == 0, result.output

    expected = [*MODEL_SUBDIRS.values(), "sam2_video", "mm_grounding_dino", "sam3"]
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    loaded = load_models(ModelSettings(device="cpu"), out)
    assert loaded.is_tiny
    assert load_sam2_video(ModelSettings(device="cpu"), out).is_tiny
    sam3 = load_backend(Settings(models=ModelSettings(backend="sam3", device="cpu")), out)
    assert sam3.is_tiny and sam3.spec.name == "sam3"
    assert "sam2_video" in result.output and "mm_grounding_dino" in result.output
    assert str(out / "sam3") in result.output


def test_tiny_seed_changes_the_weights(runner: CliRunner, tmp_path: Path) -> None:
    for name, seed in (("a", "0"), ("b", "5")):
        result = runner.invoke(main, ["models", "tiny", str(tmp_path / name), "--seed", seed])
        assert result.exit_code == 0, result.output
    a = load_file(tmp_path / "a" / "sam" / "model.safetensors")
    b = load_file(tmp_path / "b" / "sam" / "model.safetensors")
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_convert_sam_writes_a_sam_dir_that_fits_the_models_layout(
    runner: CliRunner, tmp_path: Path, tiny_models_dir: Path
) -> None:
    checkpoint = tmp_path / "sam_small.pth"
    reference = write_original_sam_checkpoint(checkpoint, seed=1)
    models_dir = tmp_path / "models"
    shutil.copytree(tiny_models_dir, models_dir, ignore=shutil.ignore_patterns("sam"))

    result = runner.invoke(
        main, ["models", "convert-sam", str(checkpoint), str(models_dir / "sam")]
    )
    assert result.exit_code == 0, result.output

    loaded = load_models(ModelSettings(device="cpu"), models_dir)
    key = "mask_decoder.iou_prediction_head.proj_out.weight"
    assert torch.equal(loaded.sam.state_dict()[key], reference.state_dict()[key])
    assert SamModel.from_pretrained(models_dir / "sam").config.vision_config.hidden_size == 32


def test_convert_sam_refuses_a_file_that_is_not_sam(runner: CliRunner, tmp_path: Path) -> None:
    other = tmp_path / "detector.pth"
    torch.save({"backbone.weight": torch.zeros(3)}, other)

    result = runner.invoke(main, ["models", "convert-sam", str(other), str(tmp_path / "out")])

    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: ")
    assert str(other) in lines[0]
    assert not (tmp_path / "out").exists()


def test_convert_sam_missing_checkpoint(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        main, ["models", "convert-sam", str(tmp_path / "nope.pth"), str(tmp_path / "out")]
    )
    assert result.exit_code == 2
    assert "no such file" in result.output
    assert "Traceback" not in result.output


def test_models_help_lists_both_commands_with_examples(runner: CliRunner) -> None:
    result = runner.invoke(main, ["models", "--help"])
    assert result.exit_code == 0
    assert "tiny" in result.output
    assert "convert-sam" in result.output
    for command in ("tiny", "convert-sam"):
        help_text = runner.invoke(main, ["models", command, "--help"]).output
        assert "Example:" in help_text
        assert f"prelabel models {command}" in help_text
