"""The ``prelabel`` command: a thin click layer over the library.

Each command turns flags into settings, calls one library function and turns a
:class:`~prelabel.errors.PrelabelError` into one line on stderr with exit code 2 (usage, config,
model or auth problems). Heavy imports happen inside the commands, so ``--help`` is fast.
"""

from __future__ import annotations

import logging

import click

from prelabel import __version__
from prelabel.cli._common import CONTEXT_SETTINGS


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="prelabel")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Zero-shot panoptic pre-labels for Segments.ai datasets.

    Grounding DINO finds things, SAM cuts their masks, CLIPSeg and SAM segment stuff, and the
    result is written as a Segments segmentation bitmap (or locally, with `predict`).
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # Their debug lines quote request headers: signatures and credential ids.
    for name in ("botocore", "boto3", "s3transfer", "google"):
        logging.getLogger(name).setLevel(max(level, logging.INFO))


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


_register()
