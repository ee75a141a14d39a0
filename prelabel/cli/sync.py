"""``prelabel sync``: keep pre-labeling new uploads, every interval or once (cron)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from prelabel.cli._common import CONTEXT_SETTINGS, UsageFailure
from prelabel.cli._logging import log_format_option, use_log_format
from prelabel.cli.run import (
    apply_overrides,
    install_redaction,
    pipeline_loader,
    print_summary,
    read_api_key,
    remote_options,
)


@click.command(context_settings=CONTEXT_SETTINGS)
@remote_options
@click.option(
    "--interval",
    default="10m",
    show_default=True,
    help="Time between cycles: 30s, 10m, 1h. Failing cycles are retried sooner, with backoff.",
)
@click.option("--once", is_flag=True, help="Run one cycle and exit (for cron or a CronJob).")
@click.option(
    "--overwrite-prelabels",
    is_flag=True,
    help="In the first cycle, also redo samples whose label is still PRELABELED (never a "
    "person's label); later cycles label new samples only.",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("prelabel-output"),
    show_default=True,
    help="Where each cycle's report.json is written (the latest cycle's).",
)
@log_format_option
def sync(
    dataset: str,
    api_url: str | None,
    labelset: str,
    api_key_file: Path | None,
    state_dir: Path | None,
    models_dir: Path | None,
    config_path: Path | None,
    device: str | None,
    quiet: bool,
    interval: str,
    once: bool,
    overwrite_prelabels: bool,
    output_dir: Path,
    log_format: str,
) -> None:
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

    from prelabel.config import load_settings
    from prelabel.errors import PrelabelError
    from prelabel.progress import TqdmProgress
    from prelabel.state import StateStore, default_state_dir
    from prelabel.sync import StopSignal, SyncPolicy, parse_interval, sync_loop
    from prelabel.worker import RunOptions, run_dataset

    key = read_api_key(api_key_file)
    install_redaction(key)
    use_log_format(log_format, [key])
    try:
        policy = SyncPolicy(interval_s=parse_interval(interval), once=once)
        settings = apply_overrides(load_settings(config_path), api_url=api_url, device=device)
    except PrelabelError as exc:
        raise UsageFailure(str(exc)) from None
    options = RunOptions(
        dataset=dataset,
        labelset=labelset,
        overwrite_prelabels=overwrite_prelabels,
        output_dir=output_dir,
    )
    load = pipeline_loader(settings, models_dir)
    stop = StopSignal()
    stop.install()
    state = StateStore.in_dir(state_dir or default_state_dir())

    # --overwrite-prelabels redoes PRELABELED labels until one cycle completes; after that
    # every label it finds PRELABELED is one it just wrote, and redoing them each cycle would
    # rewrite the dataset every interval.
    current = [options]

    def cycle(should_stop: Any) -> Any:
        with logging_redirect_tqdm():
            summary = run_dataset(
                key,
                settings,
                current[0],
                state=state,
                load_pipeline=load,
                progress=TqdmProgress(disable=quiet),
                should_stop=should_stop,
            )
        current[0] = replace(options, overwrite_prelabels=False)
        return summary

    try:
        last = sync_loop(cycle, policy, stop, on_summary=print_summary)
    except PrelabelError as exc:
        raise UsageFailure(str(exc)) from None
    finally:
        state.close()
    if once and last is not None and last.failed:
        sys.exit(1)
