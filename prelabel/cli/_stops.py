"""How a command a signal stopped ends: after its summary, what is left and exit 130.

The driver (:func:`prelabel.run.driver.drive`) finishes the samples in flight and marks the
summary interrupted; every command then ends through these, so the wording and the exit code
are said once.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, NoReturn

import click

if TYPE_CHECKING:
    from prelabel.run.report import RunSummary


def exit_interrupted(
    summary: RunSummary, then: str = "rerun the same command to finish the remaining {left}"
) -> None:
    """After the summary of a command stopped by a signal (the driver's stop: the samples in
    flight finished, no new one started): say how to finish, exit 130. ``then`` says it,
    ``{left}`` being the number of samples left ("samples" when not known)."""
    if not summary.interrupted:
        return
    left = "samples" if summary.remaining is None else str(summary.remaining)
    exit_stopped(then.format(left=left))


def exit_stopped(then: str) -> NoReturn:
    """``interrupted: THEN`` on stderr and exit 130: every command a signal stopped ends so."""
    from prelabel.run.sync import EXIT_INTERRUPTED

    click.echo("interrupted: " + then, err=True)
    sys.exit(EXIT_INTERRUPTED)


def exit_evaluation_stopped(evaluated: int) -> NoReturn:
    """How every evaluation a signal stopped ends: its scores are partial, and it starts over."""
    exit_stopped(
        f"the scores cover the {evaluated} samples evaluated; rerun the same "
        "command to evaluate them all (it starts over)"
    )
