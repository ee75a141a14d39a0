"""Pieces shared by the commands: the exit-code-2 error, option decorators, key handling.

Options that several commands take are declared once here, as decorators, so their names,
types and help read the same everywhere; commands only add their own.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from prelabel.cli._logging import LOG_FORMATS, use_log_format

if TYPE_CHECKING:
    from prelabel.config import Settings
    from prelabel.run.job import RunOptions
    from prelabel.run.report import RunSummary

#: Given to every command, not only the group: click caches a command's help option the first
#: time it builds it, so a command invoked on its own (tests, embedding) must carry -h too.
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

F = TypeVar("F", bound=Callable[..., Any])


class UsageFailure(click.ClickException):
    """A usage, config, model or auth problem: one line on stderr, exit code 2, no traceback."""

    exit_code = 2


@contextmanager
def usage_errors() -> Iterator[None]:
    """Turn prelabel's own errors into :class:`UsageFailure` (one line, exit code 2)."""
    from prelabel.errors import PrelabelError

    try:
        yield
    except PrelabelError as exc:
        raise UsageFailure(str(exc)) from None


class HiddenAliasOption(click.Option):
    """An option whose first name is shown in help and whose later names are old spellings,
    still accepted (``--out`` shown, ``--output-dir`` accepted)."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        shown, self.opts = self.opts, self.opts[:1]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = shown


#: OWNER/NAME, as Segments names a dataset.
_DATASET_NAME = re.compile(r"[^/\s]+/[^/\s]+")


def dataset_name(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Refuse a dataset not given as OWNER/NAME before anything reaches the API."""
    values = value if isinstance(value, tuple) else (value,)
    for name in values:
        if name is not None and not _DATASET_NAME.fullmatch(name):
            raise UsageFailure(
                f"--dataset {name!r} is not OWNER/NAME: give the owner too, e.g. "
                f"jane/{name.strip('/') or 'streets'}"
            )
    return value


def _stack(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(fn: F) -> F:
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn

    return apply


#: --models' help, shared with the demo's own --models.
MODELS_HELP = (
    "Directory with grounding_dino/, sam/ and clipseg/ (models.backend: sam3 reads sam3/ "
    "instead), and sam2_video/ for image-sequence datasets (as `prelabel models tiny` writes "
    "it; see README, Models and weights)."
)

models_option = click.option(
    "--models",
    "models_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar="PRELABEL_MODELS",
    show_envvar=True,
    help=MODELS_HELP + " Default: the ids in the config (Hugging Face ids or local dirs).",
)

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    envvar="PRELABEL_CONFIG",
    show_envvar=True,
    help="YAML config: models, pipeline thresholds, per-category options "
    "(see configs/default.yaml).",
)

device_option = click.option(
    "--device",
    default=None,
    help="Override models.device: auto, cpu, cuda, cuda:1, mps.",
)

quiet_option = click.option("-q", "--quiet", is_flag=True, help="No progress bar.")


def api_url_option(prefix: str = "") -> Callable[[F], F]:
    return click.option(
        "--api-url",
        default=None,
        envvar="PRELABEL_API_URL",
        show_envvar=True,
        help=f"{prefix}API base URL (default https://api.segments.ai/, or remote.api_url in the "
        "config). Point it at `prelabel emulator` to try things without an account.",
    )


def api_key_file_option(prefix: str = "") -> Callable[[F], F]:
    return click.option(
        "--api-key-file",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        default=None,
        help=f"{prefix}File holding the API key. Default: the SEGMENTS_API_KEY environment "
        "variable.",
    )


log_format_option = click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    help="json: one JSON object a line (time, level, logger, message, dataset, sample, outcome, "
    "reason), for log collectors. Secrets never appear.",
)


def interval_option(help: str) -> Callable[[F], F]:
    return click.option("--interval", default="10m", show_default=True, help=help)


retry_failed_option = click.option(
    "--retry-failed",
    is_flag=True,
    help="Also try samples parked after worker.max_attempts failures (default 3; server "
    "trouble does not count). In sync and serve, the first cycle only.",
)


def overwrite_option(help: str) -> Callable[[F], F]:
    return click.option("--overwrite-prelabels", is_flag=True, help=help)


def output_dir_option(
    help: str, default: Path | None = Path("prelabel-output")
) -> Callable[[F], F]:
    """``--out DIR``, the output folder of every command (``--output-dir`` still accepted)."""
    return click.option(
        "--out",
        "--output-dir",
        "output_dir",
        cls=HiddenAliasOption,
        type=click.Path(file_okay=False, path_type=Path),
        default=default,
        required=default is None,
        show_default=default is not None,
        help=help,
    )


_DATASET_OPTIONS = (
    api_url_option(),
    click.option(
        "--labelset", default="ground-truth", show_default=True, help="Labelset to write."
    ),
    api_key_file_option(),
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
)


def dataset_options(*, multiple: bool = False) -> Callable[[F], F]:
    """The options of every command that labels datasets (run, sync, serve); ``multiple``
    makes ``--dataset`` repeatable."""
    return _stack(
        click.option(
            "--dataset",
            "datasets",
            required=True,
            multiple=multiple,
            envvar="PRELABEL_DATASET",
            show_envvar=True,
            callback=dataset_name,
            help="Dataset as OWNER/NAME, e.g. jane/street-scenes."
            + (" Repeat for several." if multiple else ""),
        ),
        *_DATASET_OPTIONS,
    )


@dataclass(frozen=True)
class LabelingArgs:
    """The options every labeling command shares, as one value (see :func:`labeling_options`)."""

    #: One dataset, unless the command takes a repeatable ``--dataset`` (serve).
    datasets: tuple[str, ...]
    api_url: str | None
    labelset: str
    api_key_file: Path | None
    state_dir: Path | None
    models_dir: Path | None
    config_path: Path | None
    device: str | None
    quiet: bool
    overwrite_prelabels: bool
    retry_failed: bool
    output_dir: Path
    log_format: str

    @property
    def dataset(self) -> str:
        """The dataset of a command that takes one."""
        [dataset] = self.datasets
        return dataset

    def run_options(self, **extra: Any) -> RunOptions:
        """The run's options from these arguments, plus the command's own (``limit``, ...)."""
        from prelabel.run.job import RunOptions

        return RunOptions(
            dataset=self.dataset,
            labelset=self.labelset,
            overwrite_prelabels=self.overwrite_prelabels,
            retry_failed=self.retry_failed,
            output_dir=self.output_dir,
            **extra,
        )

    def key_and_settings(self, *secrets: str) -> tuple[str, Settings]:
        """The key and settings (:func:`key_and_settings`), with the log in ``--log-format``.

        The key and every one of ``secrets`` (serve's webhook secret) are redacted from all
        log output from here on, in either format.
        """
        key, settings = key_and_settings(
            self.api_key_file, self.config_path, api_url=self.api_url, device=self.device
        )
        for secret in secrets:
            install_redaction(secret)
        use_log_format(self.log_format, (key, *secrets))
        return key, settings


def labeling_options(
    *, overwrite_help: str, output_help: str, multiple_datasets: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """:func:`dataset_options`, ``--overwrite-prelabels``, ``--output-dir`` and
    ``--log-format``, handed to the command as one :class:`LabelingArgs` in its first
    parameter, ``args``."""
    names = [f.name for f in fields(LabelingArgs)]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def bundled(**kwargs: Any) -> Any:
            datasets = kwargs["datasets"]
            kwargs["datasets"] = tuple(datasets) if multiple_datasets else (datasets,)
            args = LabelingArgs(**{name: kwargs.pop(name) for name in names})
            return command(args, **kwargs)

        options = _stack(
            dataset_options(multiple=multiple_datasets),
            overwrite_option(overwrite_help),
            retry_failed_option,
            output_dir_option(output_help),
            log_format_option,
        )
        return options(bundled)

    return decorate


def key_and_settings(
    api_key_file: Path | None,
    config_path: Path | None,
    *,
    api_url: str | None = None,
    device: str | None = None,
) -> tuple[str, Settings]:
    """The API key (see :func:`read_api_key`) and the settings (:func:`load_cli_settings`)."""
    key = read_api_key(api_key_file)
    return key, load_cli_settings(config_path, api_url=api_url, device=device)


def read_api_key(api_key_file: Path | None) -> str:
    """The key from ``--api-key-file`` or ``SEGMENTS_API_KEY``, redacted from all logs after."""
    if api_key_file is not None:
        key = api_key_file.read_text(encoding="utf-8").strip()
        if not key:
            raise UsageFailure(f"{api_key_file} is empty")
    else:
        key = os.environ.get("SEGMENTS_API_KEY", "").strip()
        if not key:
            raise UsageFailure("no API key: set SEGMENTS_API_KEY or pass --api-key-file FILE")
    install_redaction(key)
    return key


def install_redaction(secret: str) -> None:
    """Replace ``secret`` with ``***``, and URL query strings with ``?...``, in every log record,
    whichever handler prints it (urllib3's debug lines quote signed image URLs).

    Done at record creation rather than as a handler filter, because tqdm's logging redirect
    swaps the handlers while a bar is shown.
    """
    from prelabel.storage.urls import redact_queries

    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        message = record.getMessage()
        cleaned = redact_queries(message.replace(secret, "***"))
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        return record

    logging.setLogRecordFactory(factory)


def load_cli_settings(
    config_path: Path | None, *, api_url: str | None = None, device: str | None = None
) -> Settings:
    """The config file with the command line's overrides; a bad config is exit code 2."""
    from prelabel.config import load_settings, with_overrides

    with usage_errors():
        return with_overrides(load_settings(config_path), api_url=api_url, device=device)


def print_summary(summary: RunSummary) -> None:
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
