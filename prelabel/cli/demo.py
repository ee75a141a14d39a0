"""``prelabel demo``: the main job on a local emulator, with no account and no weights."""

from __future__ import annotations

import shlex
import signal
import threading
from pathlib import Path

import click

from prelabel.cli._common import CONTEXT_SETTINGS, print_summary, quiet_option, usage_errors


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("prelabel-demo"),
    show_default=True,
    help="Folder for report.json, overlays/ and config.yaml, and for the demo's scenes "
    "(images/), tiny models (tiny-models/) and resume state (state/).",
)
@click.option(
    "--models",
    "models_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Real weights: a directory with grounding_dino/, sam/ and clipseg/ (see README, "
    "Models and weights). Default: tiny random-weight models written to OUT/tiny-models, "
    "whose masks are meaningless.",
)
@click.option(
    "--keep-serving",
    is_flag=True,
    help="After the run, keep the emulator up and print the environment variables that "
    "point notebooks/review.ipynb at it (PRELABEL_DATASET, PRELABEL_API_URL, "
    "SEGMENTS_API_KEY, PRELABEL_MODELS, PRELABEL_CONFIG); Ctrl-C or SIGTERM stops it.",
)
@quiet_option
def demo(out_dir: Path, models_dir: Path | None, keep_serving: bool, quiet: bool) -> None:
    """Pre-label a demo dataset end to end: no account, no weights, one command.

    Starts the Segments emulator in this process, seeds a dataset of street scenes the
    project draws (two of them carry a person's label), makes tiny models unless --models
    is given, and runs the same job as `prelabel run` on it. The report, an overlay per
    label and the config used are written under OUT; the output ends with what to look at
    next. Exit code 1 when a sample failed, 2 when the run could not start.

    \b
    Example:
      prelabel demo
      prelabel demo --out /tmp/demo --keep-serving   # then open notebooks/review.ipynb
    """
    import sys

    from tqdm.contrib.logging import logging_redirect_tqdm

    from prelabel.demo import run_demo
    from prelabel.progress import TqdmProgress

    with usage_errors(), logging_redirect_tqdm():
        result = run_demo(out_dir, models_dir=models_dir, progress=TqdmProgress(disable=quiet))
    try:
        print_summary(result.summary)
        click.echo(result.describe())
        if keep_serving:
            click.echo("\nThe emulator keeps serving. Point the notebook at it with:")
            for name, value in result.environment().items():
                click.echo(f"export {name}={shlex.quote(value)}")
            sys.stdout.flush()
            click.echo("serving; Ctrl-C or SIGTERM stops", err=True)
            _wait_for_a_stop_signal()
    finally:
        result.stop()
    if result.summary.failed:
        sys.exit(1)


def _wait_for_a_stop_signal() -> None:
    """Block until SIGINT or SIGTERM; the caller's ``finally`` then stops the emulator."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    while not stop.wait(0.5):
        pass
