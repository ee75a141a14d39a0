"""The ``prelabel`` command: a thin click layer over the library.

Each command turns flags into settings, calls one library function and turns a
:class:`~prelabel.errors.PrelabelError` into one line on stderr with exit code 2 (usage, config,
model or auth problems). Heavy imports happen inside the commands, so ``--help`` is fast.
"""

from __future__ import annotations

from typing import Any

import click

from prelabel import __version__
from prelabel.cli._common import CONTEXT_SETTINGS
from prelabel.cli._logging import set_verbosity


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="prelabel")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Zero-shot panoptic pre-labels for Segments.ai datasets.

    Grounding DINO finds things, SAM cuts their masks, CLIPSeg and SAM segment stuff, and the
    result is written as a Segments segmentation bitmap (or locally, with `predict`).
    -v and -vv work before or after the command's name.

    \b
    Example:
      prelabel demo                                  # try it: no account, no weights
      export SEGMENTS_API_KEY=...                    # never printed or logged
      prelabel run --dataset jane/streets --models ~/prelabel-models
      prelabel predict photos/ --categories configs/coco-panoptic-categories.yaml --out out/
    """
    set_verbosity(verbose)


def _command_verbosity(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value:
        set_verbosity(value)


def _verbose_everywhere(command: click.Command) -> None:
    """Give ``command`` (and a group's subcommands) its own -v/--verbose."""
    command.params.append(
        click.Option(
            ["-v", "--verbose"],
            count=True,
            expose_value=False,
            callback=_command_verbosity,
            help="More log output (-v info, -vv debug).",
        )
    )
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _verbose_everywhere(sub)


def _register() -> None:
    from prelabel.cli.demo import demo
    from prelabel.cli.emulator import emulator
    from prelabel.cli.evaluate import evaluate
    from prelabel.cli.models import models
    from prelabel.cli.predict import predict
    from prelabel.cli.run import run
    from prelabel.cli.serve import serve
    from prelabel.cli.status import status
    from prelabel.cli.sync import sync

    main.add_command(models)
    main.add_command(predict)
    main.add_command(run)
    main.add_command(sync)
    main.add_command(serve)
    main.add_command(status)
    main.add_command(evaluate)
    main.add_command(emulator)
    main.add_command(demo)
    for command in main.commands.values():
        _verbose_everywhere(command)


_register()
