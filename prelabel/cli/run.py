"""``prelabel run``: pre-label a Segments.ai dataset once."""

from __future__ import annotations

import sys

import click

from prelabel.cli._common import (
    CONTEXT_SETTINGS,
    LabelingArgs,
    labeling_options,
    print_summary,
    usage_errors,
)
from prelabel.cli._preflight import check_api, check_start, checked_loader
from prelabel.cli._stops import exit_interrupted


@click.command(context_settings=CONTEXT_SETTINGS)
@labeling_options(
    overwrite_help="Also redo samples whose label is still PRELABELED. Labels a person touched "
    "are never written over.",
    output_help="Where report.json (every sample's outcome) is written.",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Stop after N samples.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Do everything but the asset upload and the label write; save what would be uploaded "
    "under OUT/dry-run/.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: this machine (overlapped I/O and inference). ray: a Ray cluster "
    "(pip install 'prelabel[ray]').",
)
@click.option("--ray-address", default=None, help="Ray cluster address (default: start locally).")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Ray: prediction actors, one model copy each.",
)
@click.option(
    "--gpus-per-worker",
    type=click.FloatRange(min=0),
    default=None,
    help="Ray: GPUs per prediction actor (default 1 when the cluster has GPUs, else 0; "
    "0.5 puts two actors on one GPU).",
)
def run(
    args: LabelingArgs,
    limit: int | None,
    dry_run: bool,
    engine: str,
    ray_address: str | None,
    workers: int,
    gpus_per_worker: float | None,
) -> None:
    """Pre-label every unlabeled sample of a Segments.ai dataset.

    Thing categories (has_instances: true) are found by Grounding DINO and cut by SAM,
    stuff categories by CLIPSeg and SAM. Each label is uploaded as a segmentation bitmap
    with status PRELABELED. Before writing, the sample's label is read again: a label a
    person has touched is never written over. Interrupted runs resume where they
    stopped. Exit code 0 when every selected sample was labeled or skipped, 1 when any
    failed, 2 for usage, config or key problems, 130 when stopped by Ctrl-C or SIGTERM
    (the samples in flight are finished first; a second Ctrl-C stops at once).

    \b
    Example:
      export SEGMENTS_API_KEY=...   # never printed or logged
      prelabel run --dataset jane/streets --config configs/default.yaml --models ~/models
      prelabel run --dataset jane/big --engine ray --ray-address auto --workers 8
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    from prelabel.progress import TqdmProgress
    from prelabel.run.sync import StopSignal
    from prelabel.state import StateStore

    key, settings = args.key_and_settings()
    if engine == "ray":  # on Ray, --models is a path on the workers, not here
        from prelabel.run.ray_engine import require_ray

        with usage_errors():
            require_ray()
        check_api(settings)
    else:
        check_start(settings, args.models_dir)
    options = args.run_options(limit=limit, dry_run=dry_run)
    progress = TqdmProgress(disable=args.quiet)
    with (
        StopSignal(hard_second=True).installed() as stop,
        StateStore.in_dir(args.state_dir) as state,
        usage_errors(),
    ):
        if engine == "ray":
            from prelabel.run.ray_engine import RayOptions, run_on_ray

            ray_options = RayOptions(
                address=ray_address, workers=workers, gpus_per_worker=gpus_per_worker
            )
            summary = run_on_ray(
                key,
                settings,
                options,
                ray_options,
                state=state,
                models_dir=args.models_dir,
                progress=progress,
                should_stop=stop.is_set,
            )
        else:
            from prelabel.run.dataset import run_dataset

            with logging_redirect_tqdm():
                summary = run_dataset(
                    key,
                    settings,
                    options,
                    state=state,
                    load_pipeline=checked_loader(settings, args.models_dir),
                    progress=progress,
                    should_stop=stop.is_set,
                )
    print_summary(summary)
    exit_interrupted(summary)
    if summary.failed:
        sys.exit(1)
