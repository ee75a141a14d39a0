"""``prelabel sync``: keep pre-labeling new uploads, every interval or once (cron)."""

from __future__ import annotations

import sys

import click

from prelabel.cli._common import (
    CONTEXT_SETTINGS,
    LabelingArgs,
    interval_option,
    labeling_options,
    print_summary,
    usage_errors,
)
from prelabel.cli._preflight import check_start, checked_loader


@click.command(context_settings=CONTEXT_SETTINGS)
@labeling_options(
    overwrite_help="In the first cycle, also redo samples whose label is still PRELABELED "
    "(never a person's label); later cycles label new samples only.",
    output_help="Where each cycle's report.json is written (the latest cycle's).",
)
@interval_option(
    "Time between cycles: 30s, 10m, 1h. Failing cycles are retried sooner, with backoff."
)
@click.option("--once", is_flag=True, help="Run one cycle and exit (for cron or a CronJob).")
def sync(args: LabelingArgs, interval: str, once: bool) -> None:
    """Pre-label new samples of a dataset as they arrive, until stopped.

    Each cycle is a `prelabel run` (same selection, safety and resume), so samples
    uploaded since the last cycle are labeled by the next one. SIGTERM or Ctrl-C lets
    uploads in flight finish, then exits 0. Several workers on one machine sharing a
    --state-dir never label the same sample (leases in the state file). Models load once.

    \b
    Example:
      prelabel sync --dataset jane/streets --interval 10m --models ~/models
      prelabel sync --dataset jane/streets --once     # from cron
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    from prelabel.progress import TqdmProgress
    from prelabel.run.sync import StopSignal, SyncPolicy, parse_interval, sync_dataset
    from prelabel.state import StateStore

    key, settings = args.key_and_settings()
    check_start(settings, args.models_dir)
    with usage_errors():
        policy = SyncPolicy(interval_s=parse_interval(interval), once=once)
    options = args.run_options()
    stop = StopSignal()
    stop.install()
    with StateStore.in_dir(args.state_dir) as state, usage_errors(), logging_redirect_tqdm():
        last = sync_dataset(
            key,
            settings,
            options,
            state=state,
            load_pipeline=checked_loader(settings, args.models_dir),
            policy=policy,
            stop=stop,
            progress=lambda: TqdmProgress(disable=args.quiet),
            on_summary=print_summary,
        )
    if once and last is not None and last.failed:
        sys.exit(1)
