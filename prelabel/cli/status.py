"""``prelabel status``: what the state file knows about a dataset, without calling the API."""

from __future__ import annotations

import difflib
import sys
import time
from pathlib import Path

import click

from prelabel.cli._common import CONTEXT_SETTINGS, dataset_name


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option(
    "--dataset",
    required=True,
    envvar="PRELABEL_DATASET",
    show_envvar=True,
    callback=dataset_name,
    help="Dataset as OWNER/NAME.",
)
@click.option("--labelset", default="ground-truth", show_default=True, help="Labelset of the runs.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where resume state is kept (default ~/.local/state/prelabel).",
)
def status(dataset: str, labelset: str, state_dir: Path | None) -> None:
    """Show a dataset's resume state: samples per stage, parked samples, leases.

    Reads only the local state file (no API key, no network): how many samples were labeled,
    skipped, failed or are waiting with an uploaded bitmap; which image sequences a run left
    part-way (their uploaded frames are reused by the next run); which samples are parked after
    worker.max_attempts failures, with the last reason (`--retry-failed` on run, sync or
    serve tries them again); and which samples workers hold leases on right now. Exit code 1
    when the state file holds nothing for the dataset and labelset (never run here, or a typo
    in --dataset, --labelset or --state-dir).

    \b
    Example:
      prelabel status --dataset jane/streets
    """
    from prelabel.state import StateStore

    with StateStore.in_dir(state_dir) as state:
        counts = state.counts(dataset, labelset)
        parked = state.parked(dataset, labelset)
        leases = state.leases(dataset, labelset)
        frames = state.frame_counts(dataset, labelset)
        known = state.datasets()
    if not counts and not frames and not leases:
        _never_seen(dataset, labelset, state.path, known)
    click.echo(f"{dataset} ({labelset}), state file {state.path}")
    if not counts and not frames:
        click.echo("no samples recorded yet")
    for stage, count in sorted(counts.items()):
        click.echo(f"  {stage:<9} {count:>7}")
    if frames:
        click.echo(f"sequences part-way ({len(frames)}; the next run reuses their frames):")
    for sample_uuid, count in frames.items():
        click.echo(f"  {sample_uuid}: {count} frames uploaded, label not written yet")
    if parked:
        click.echo(f"parked ({len(parked)}; --retry-failed tries them again):")
    for record in parked:
        click.echo(
            f"  {record.sample_name} ({record.sample_uuid}): {record.attempts} failures, "
            f"last: {record.reason}"
        )
    if leases:
        click.echo(f"leases ({len(leases)}):")
    now = time.time()
    for sample_uuid, owner, expires_at in leases:
        click.echo(f"  {sample_uuid}: {owner}, expires in {max(0, expires_at - now):.0f} s")


def _never_seen(dataset: str, labelset: str, path: Path, known: list[tuple[str, str]]) -> None:
    """Say that the state file has no record of the dataset, name the closest one it has, and
    exit 1: an empty table with exit 0 reads as "all done"."""
    lines = [
        f"{path} has no record of {dataset} (labelset {labelset}): no run, sync or serve "
        "with this --state-dir has labeled it yet."
    ]
    names = [f"{d} ({s})" for d, s in known]
    close = difflib.get_close_matches(f"{dataset} ({labelset})", names, n=1, cutoff=0.6)
    if close:
        lines.append(f"Did you mean {close[0]}?")
    if names:
        lines.append("It has: " + ", ".join(names[:10]) + (" ..." if len(names) > 10 else ""))
    click.echo("\n".join(lines), err=True)
    sys.exit(1)
