"""``prelabel run``: pre-label a Segments.ai dataset once."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from prelabel.cli._common import (
    CONTEXT_SETTINGS,
    UsageFailure,
    config_option,
    device_option,
    models_option,
    quiet_option,
)
from prelabel.cli._logging import log_format_option, use_log_format

logger = logging.getLogger(__name__)


def remote_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options every dataset command shares (run, sync, evaluate)."""
    return _remote_options(fn, multiple_datasets=False)


def remote_options_many(fn: Callable[..., Any]) -> Callable[..., Any]:
    """:func:`remote_options` with a repeatable ``--dataset`` (serve)."""
    return _remote_options(fn, multiple_datasets=True)


def _remote_options(fn: Callable[..., Any], *, multiple_datasets: bool) -> Callable[..., Any]:
    decorators = [
        click.option(
            "--dataset",
            required=True,
            multiple=multiple_datasets,
            help="Dataset as OWNER/NAME, e.g. jane/street-scenes."
            + (" Repeat for several." if multiple_datasets else ""),
        ),
        click.option(
            "--api-url",
            default=None,
            help="API base URL (default https://api.segments.ai/, or remote.api_url in the "
            "config). Point it at `prelabel emulator` to try things without an account.",
        ),
        click.option(
            "--labelset", default="ground-truth", show_default=True, help="Labelset to write."
        ),
        click.option(
            "--api-key-file",
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            default=None,
            help="File holding the API key. Default: the SEGMENTS_API_KEY environment variable.",
        ),
        click.option(
            "--state-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Where resume state is kept (default ~/.local/state/prelabel).",
        ),
        models_option,
        config_option,
        device_option,
        quiet_option,
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


def read_api_key(api_key_file: Path | None) -> str:
    if api_key_file is not None:
        key = api_key_file.read_text(encoding="utf-8").strip()
        if not key:
            raise UsageFailure(f"{api_key_file} is empty")
        return key
    key = os.environ.get("SEGMENTS_API_KEY", "").strip()
    if not key:
        raise UsageFailure("no API key: set SEGMENTS_API_KEY or pass --api-key-file FILE")
    return key


def install_redaction(secret: str) -> None:
    """Replace ``secret`` with ``***`` in every log record, whichever handler prints it.

    Done at record creation rather than as a handler filter, because tqdm's logging redirect
    swaps the handlers while a bar is shown.
    """
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        message = record.getMessage()
        if secret in message:
            record.msg = message.replace(secret, "***")
            record.args = None
        return record

    logging.setLogRecordFactory(factory)


@click.command(context_settings=CONTEXT_SETTINGS)
@remote_options
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Stop after N samples.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Do everything but the asset upload and the label write; save what would be uploaded "
    "under OUTPUT_DIR/dry-run/.",
)
@click.option(
    "--overwrite-prelabels",
    is_flag=True,
    help="Also redo samples whose label is still PRELABELED. Labels a person touched are never "
    "written over.",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("prelabel-output"),
    show_default=True,
    help="Where report.json (every sample's outcome) is written.",
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
@log_format_option
def run(
    dataset: str,
    api_url: str | None,
    labelset: str,
    api_key_file: Path | None,
    state_dir: Path | None,
    models_dir: Path | None,
    config_path: Path | None,
    device: str | None,
    quiet: bool,
    limit: int | None,
    dry_run: bool,
    overwrite_prelabels: bool,
    output_dir: Path,
    engine: str,
    ray_address: str | None,
    workers: int,
    gpus_per_worker: float | None,
    log_format: str,
) -> None:
    """Pre-label every unlabeled sample of a Segments.ai dataset.

    Thing categories (has_instances: true) are found by Grounding DINO and cut by SAM,
    stuff categories by CLIPSeg and SAM. Each label is uploaded as a segmentation bitmap
    with status PRELABELED. Before writing, the sample's label is read again: a label a
    person has touched is never written over. Interrupted runs resume where they
    stopped. Exit code 0 when every selected sample was labeled or skipped, 1 when any
    failed, 2 for usage, config or key problems.

    \b
    Example:
      export SEGMENTS_API_KEY=...   # never printed or logged
      prelabel run --dataset jane/streets --config configs/default.yaml --models ~/models
      prelabel run --dataset jane/big --engine ray --ray-address auto --workers 8
    """
    from prelabel.worker import RunOptions

    key = read_api_key(api_key_file)
    install_redaction(key)
    use_log_format(log_format, [key])
    options = RunOptions(
        dataset=dataset,
        labelset=labelset,
        limit=limit,
        dry_run=dry_run,
        overwrite_prelabels=overwrite_prelabels,
        output_dir=output_dir,
    )
    ray_options = None
    if engine == "ray":
        from prelabel.ray_engine import RayOptions

        if dry_run:
            raise UsageFailure("--dry-run is not supported with --engine ray")
        ray_options = RayOptions(
            address=ray_address, workers=workers, gpus_per_worker=gpus_per_worker
        )
    summary = execute(
        key,
        options,
        ray_options=ray_options,
        api_url=api_url,
        state_dir=state_dir,
        models_dir=models_dir,
        config_path=config_path,
        device=device,
        quiet=quiet,
    )
    print_summary(summary)
    if summary.failed:
        sys.exit(1)


def execute(
    key: str,
    options: Any,
    *,
    ray_options: Any = None,
    api_url: str | None,
    state_dir: Path | None,
    models_dir: Path | None,
    config_path: Path | None,
    device: str | None,
    quiet: bool,
) -> Any:
    """Settings, state and progress around :func:`prelabel.worker.run_dataset`."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from prelabel.config import load_settings
    from prelabel.errors import PrelabelError
    from prelabel.progress import TqdmProgress
    from prelabel.state import StateStore, default_state_dir
    from prelabel.worker import run_dataset

    try:
        settings = apply_overrides(load_settings(config_path), api_url=api_url, device=device)
    except PrelabelError as exc:
        raise UsageFailure(str(exc)) from None
    state = StateStore.in_dir(state_dir or default_state_dir())
    try:
        if ray_options is not None:
            from prelabel.ray_engine import run_on_ray

            return run_on_ray(
                key,
                settings,
                options,
                ray_options,
                state=state,
                models_dir=models_dir,
                progress=TqdmProgress(disable=quiet),
            )
        with logging_redirect_tqdm():
            return run_dataset(
                key,
                settings,
                options,
                state=state,
                load_pipeline=pipeline_loader(settings, models_dir),
                progress=TqdmProgress(disable=quiet),
            )
    except PrelabelError as exc:
        raise UsageFailure(str(exc)) from None
    finally:
        state.close()


def pipeline_loader(settings: Any, models_dir: Path | None) -> Callable[[], Any]:
    """A loader that builds the pipeline on first call and returns the same one after.

    torch and transformers are imported only then: a run that stops at a key or config
    problem, or has nothing to do, never needs them.
    """
    loaded: list[Any] = []

    def load() -> Any:
        if not loaded:
            from prelabel.pipeline.pipeline import Pipeline

            # Logs a warning when tiny random-weight models are in use.
            loaded.append(Pipeline.load(settings, models_dir))
        return loaded[0]

    return load


def apply_overrides(settings: Any, *, api_url: str | None, device: str | None) -> Any:
    if api_url:
        settings = settings.model_copy(
            update={"remote": settings.remote.model_copy(update={"api_url": api_url})}
        )
    if device:
        settings = settings.model_copy(
            update={"models": settings.models.model_copy(update={"device": device})}
        )
    return settings


def print_summary(summary: Any) -> None:
    """A small table on stderr: results, then reasons by count."""
    rows = [(result, "", count) for result, count in sorted(summary.counts.items())]
    rows += [(result, reason, count) for (result, reason), count in summary.reasons.most_common()]
    if not rows:
        click.echo("nothing to do: no sample needs a pre-label", err=True)
    width = max((len(r[0]) for r in rows), default=6)
    for result, reason, count in rows:
        line = f"{result:<{width}}  {count:>7}" + (f"  {reason}" if reason else "")
        click.echo(line, err=True)
    if summary.report_path:
        click.echo(f"report: {summary.report_path}", err=True)
