"""``prelabel demo``: the main job on a local emulator, with no account and no weights."""

from __future__ import annotations

import shlex
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import click

from prelabel.cli._common import (
    CONTEXT_SETTINGS,
    MODELS_HELP,
    output_dir_option,
    print_summary,
    quiet_option,
    usage_errors,
)

if TYPE_CHECKING:
    from prelabel.demo import NextCommands


@click.command(context_settings=CONTEXT_SETTINGS)
@output_dir_option(
    "Folder for report.json, overlays/ and config.yaml, and for the demo's scenes "
    "(images/), tiny models (tiny-models/) and resume state (state/).",
    default=Path("prelabel-demo"),
)
@click.option(
    "--models",
    "models_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Real weights. " + MODELS_HELP + " Default: tiny random-weight models written to "
    "OUT/tiny-models, whose masks are meaningless.",
)
@click.option(
    "--keep-serving",
    is_flag=True,
    help="After the run, keep the emulator up and print the environment variables that "
    "point notebooks/review.ipynb at it (PRELABEL_DATASET, PRELABEL_API_URL, "
    "SEGMENTS_API_KEY, PRELABEL_MODELS, PRELABEL_CONFIG); Ctrl-C or SIGTERM stops it.",
)
@quiet_option
def demo(output_dir: Path, models_dir: Path | None, keep_serving: bool, quiet: bool) -> None:
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
      prelabel demo --models ~/prelabel-models       # real weights
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    from prelabel.demo import run_demo
    from prelabel.progress import TqdmProgress

    if models_dir is not None:
        from prelabel.cli._preflight import check_models
        from prelabel.config import Settings

        with usage_errors():
            check_models(Settings(), models_dir)
    with usage_errors(), logging_redirect_tqdm():
        result = run_demo(output_dir, models_dir=models_dir, progress=TqdmProgress(disable=quiet))
    try:
        print_summary(result.summary)
        click.echo(result.describe(next_commands()))
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


def next_commands() -> NextCommands:
    """How this shell reaches prelabel, its venv's tools and the notebook, for "Next:" lines.

    ``prelabel`` when that is on the PATH; else the path it was started by (after the
    README's set-up, ``.venv/bin/prelabel``), relative to the current folder when inside it;
    else ``python -m prelabel`` with this interpreter.
    """
    from prelabel.demo import NextCommands

    started = Path(sys.argv[0])
    on_path = shutil.which("prelabel")
    tools = _shown(Path(sys.executable).parent) + "/"
    if on_path and Path(on_path).resolve() == started.resolve():
        command, tools = "prelabel", ""
    elif started.name == "prelabel" and started.is_file():
        command = _shown(started)
    else:
        command = f"{_shown(Path(sys.executable))} -m prelabel"
    notebook = Path(__file__).resolve().parents[2] / "notebooks" / "review.ipynb"
    if not notebook.is_file():  # an installed copy: the notebook is in the repository only
        return NextCommands(prelabel=command, tools=tools)
    return NextCommands(prelabel=command, tools=tools, notebook=_shown(notebook))


def _shown(path: Path) -> str:
    """``path`` relative to the current folder when it is inside it, else absolute."""
    absolute = path.absolute()
    try:
        return shlex.quote(str(absolute.relative_to(Path.cwd())))
    except ValueError:
        return shlex.quote(str(absolute))


def _wait_for_a_stop_signal() -> None:
    """Block until SIGINT or SIGTERM; the caller's ``finally`` then stops the emulator."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    while not stop.wait(0.5):
        pass
