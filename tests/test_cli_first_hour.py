"""Cheap mistakes a newcomer makes in the first hour, each answered at once and clearly.

A typo in a config key or a category name gets "did you mean"; a dataset without its owner, a
wrong ``--models`` folder, an API URL where nothing listens and a machine offline without
weights are refused at once (the first three before the dataset is listed, the last when the
models are first needed, so a run with nothing to predict still needs no weights);
``-v`` works after the command too; ``--out`` names the output folder everywhere; the
``PRELABEL_*`` variables ``prelabel demo --keep-serving`` prints are read by the commands;
``prelabel status`` on a dataset it never saw says so with exit code 1.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from prelabel.cli import main
from prelabel.cli.demo import next_commands
from prelabel.config import CategoryOptions, PipelineSettings
from prelabel.emulator import Emulator
from prelabel.errors import TaxonomyError
from prelabel.run.job import Job
from prelabel.segments.client import SampleRef
from prelabel.state import StateStore
from prelabel.taxonomy import Category, build_taxonomy
from tests.connector_helpers import free_port, requests_matching, write_config
from tests.fixtures.emulator import EMULATOR_API_KEY, SeededDataset

REPO = Path(__file__).resolve().parents[1]
LABELING_COMMANDS = ("run", "sync", "serve", "predict", "demo")


def run_cli(tmp_path: Path, url: str, *extra: str, env: dict[str, str] | None = None) -> Result:
    args = ["run", "--api-url", url, "--state-dir", str(tmp_path / "state"), "-q", *extra]
    return CliRunner().invoke(main, args, env={"SEGMENTS_API_KEY": EMULATOR_API_KEY, **(env or {})})


def test_a_config_key_typo_gets_did_you_mean(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("pipeline:\n  box_treshold: 0.3\nremote:\n  retry_atempts: 2\n")

    args = ["predict", str(tmp_path), "--categories", str(config), "--out", str(tmp_path / "o")]

    result = CliRunner().invoke(main, [*args, "--config", str(config)])

    assert result.exit_code == 2
    assert "pipeline.box_treshold: unknown key (did you mean 'box_threshold'?)" in result.output
    assert "remote.retry_atempts: unknown key (did you mean 'retry_attempts'?)" in result.output


def test_a_category_name_typo_gets_did_you_mean() -> None:
    person = Category(id=1, name="person", has_instances=True)

    with pytest.raises(TaxonomyError, match=r"'persn' \(did you mean 'person'\?\)"):
        build_taxonomy([person], {"persn": CategoryOptions()}, PipelineSettings())


def test_a_dataset_without_its_owner_never_reaches_the_api(
    emulator: Emulator, tmp_path: Path, tiny_models_dir: Path
) -> None:
    emulator.clear_requests()

    result = run_cli(tmp_path, emulator.url, "--dataset", "demo", "--models", str(tiny_models_dir))

    assert result.exit_code == 2
    assert "--dataset 'demo' is not OWNER/NAME: give the owner too, e.g. jane/demo" in result.output
    assert emulator.requests == []


def test_a_wrong_models_folder_is_refused_before_the_dataset_is_listed(
    emulator: Emulator, seeded_dataset: SeededDataset, tmp_path: Path
) -> None:
    half = tmp_path / "models"
    (half / "sam").mkdir(parents=True)
    emulator.clear_requests()

    result = run_cli(tmp_path, emulator.url, "--dataset", seeded_dataset.full_name,
                     "--models", str(half))  # fmt: skip

    assert result.exit_code == 2
    assert f"--models {half} lacks grounding_dino/, clipseg/" in result.output
    assert emulator.requests == []  # nothing listed, no progress bar part-way


@pytest.mark.parametrize("how", ["hub-unreachable", "HF_HUB_OFFLINE"])
def test_offline_without_models_fails_at_once_with_what_to_do(
    emulator: Emulator, seeded_dataset: SeededDataset, tmp_path: Path, how: str
) -> None:
    env = {
        "HF_HUB_CACHE": str(tmp_path / "empty-cache"),
        "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "HF_HUB_OFFLINE": "1" if how == "HF_HUB_OFFLINE" else "",
        "TRANSFORMERS_OFFLINE": "",
    }
    emulator.clear_requests()
    started = time.monotonic()

    result = run_cli(tmp_path, emulator.url, "--dataset", seeded_dataset.full_name, env=env)

    elapsed = time.monotonic() - started
    print(f"{how}: refused after {elapsed:.2f} s")
    assert result.exit_code == 2
    assert "no model weights for grounding_dino (IDEA-Research/grounding-dino-tiny)" in (
        result.output
    )
    assert "Pass --models DIR" in result.output
    assert elapsed < 5  # no hub retries (they took 29 s)
    assert not requests_matching(emulator, "PUT", "/labels/")  # nothing written


def test_verbose_works_after_the_command_too(tmp_path: Path) -> None:
    root = logging.getLogger()
    level = root.level
    try:
        result = CliRunner().invoke(
            main, ["status", "--dataset", "jane/x", "--state-dir", str(tmp_path), "-vv"]
        )
        assert "No such option" not in result.output
        assert root.level == logging.DEBUG
    finally:
        root.setLevel(level)


@pytest.mark.parametrize("command", LABELING_COMMANDS)
def test_every_command_names_its_output_folder_out(command: str) -> None:
    shown = CliRunner().invoke(main, [command, "--help"]).output

    assert "--out" in shown
    assert "--output-dir" not in shown  # still accepted, not shown
    assert "sam2_video/" in shown  # --models says what sequences need


def test_output_dir_is_still_accepted_and_means_out(
    emulator: Emulator, seeded_dataset: SeededDataset, tmp_path: Path, tiny_models_dir: Path
) -> None:
    config = write_config(tmp_path / "c.yaml")
    result = run_cli(tmp_path, emulator.url, "--dataset", seeded_dataset.full_name, "--limit",
                     "1", "--models", str(tiny_models_dir), "--config", str(config),
                     "--output-dir", str(tmp_path / "old"))  # fmt: skip

    assert result.exit_code == 0, result.output
    assert (tmp_path / "old" / "report.json").is_file()


def test_the_top_level_help_has_an_example() -> None:
    shown = CliRunner().invoke(main, ["--help"]).output

    assert "Example:" in shown and "prelabel demo" in shown


def test_status_reads_prelabel_dataset_and_says_when_it_never_saw_a_dataset(
    tmp_path: Path,
) -> None:
    with StateStore.in_dir(tmp_path) as store:
        store.mark_labeled("jane/streets", "ground-truth", "u1", "a.png")

    unknown = CliRunner().invoke(
        main, ["status", "--state-dir", str(tmp_path)], env={"PRELABEL_DATASET": "jane/street"}
    )
    known = CliRunner().invoke(
        main, ["status", "--state-dir", str(tmp_path)], env={"PRELABEL_DATASET": "jane/streets"}
    )

    assert unknown.exit_code == 1
    assert "has no record of jane/street (labelset ground-truth)" in unknown.output
    assert "Did you mean jane/streets (ground-truth)?" in unknown.output
    assert known.exit_code == 0, known.output
    assert "labeled" in known.output


def test_next_commands_are_the_ones_this_shell_reaches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", [".venv/bin/prelabel", "demo"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no venv activated
    monkeypatch.setattr(sys, "executable", str(REPO / ".venv" / "bin" / "python"))
    if not (REPO / ".venv" / "bin" / "prelabel").is_file():
        pytest.skip("needs the set-up's .venv")

    commands = next_commands()

    assert commands.prelabel == ".venv/bin/prelabel"
    assert commands.tools == ".venv/bin/"
    assert commands.notebook == "notebooks/review.ipynb"


def test_a_sample_s_seconds_leave_out_time_before_its_own_stages() -> None:
    job = Job(SampleRef("u1", "a.png", "http://x/a.png", None))
    time.sleep(0.3)  # queued, or waiting for the models to load

    with job.timed():
        time.sleep(0.05)
    job.finish("labeled")

    assert job.outcome is not None and job.outcome.seconds is not None
    assert 0.04 <= job.outcome.seconds < 0.2
