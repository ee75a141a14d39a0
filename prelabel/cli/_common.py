"""Pieces shared by the commands: the exit-code-2 error and option decorators."""

from __future__ import annotations

from pathlib import Path

import click

#: Given to every command, not only the group: click caches a command's help option the first
#: time it builds it, so a command invoked on its own (tests, embedding) must carry -h too.
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class UsageFailure(click.ClickException):
    """A usage, config, model or auth problem: one line on stderr, exit code 2, no traceback."""

    exit_code = 2


models_option = click.option(
    "--models",
    "models_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory with grounding_dino/, sam/ and clipseg/ (as `prelabel models tiny` writes "
    "it). Default: the ids in the config (Hugging Face ids or local dirs).",
)

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="YAML config: models, pipeline thresholds, per-category options "
    "(see configs/default.yaml).",
)

device_option = click.option(
    "--device",
    default=None,
    help="Override models.device: auto, cpu, cuda, cuda:1, mps.",
)

quiet_option = click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
