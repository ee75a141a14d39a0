"""``prelabel serve``: pre-label samples as Segments.ai webhooks announce them."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from prelabel.cli._common import (
    CONTEXT_SETTINGS,
    LabelingArgs,
    UsageFailure,
    interval_option,
    labeling_options,
    usage_errors,
)
from prelabel.cli._preflight import check_start, checked_loader

if TYPE_CHECKING:
    from prelabel.serve.lifecycle import Lifecycle

logger = logging.getLogger(__name__)


@click.command(context_settings=CONTEXT_SETTINGS)
@labeling_options(
    overwrite_help="In the first cycle, also redo samples whose label is still PRELABELED.",
    output_help="Where the latest cycle's and webhook batch's report.json go, per dataset.",
    multiple_datasets=True,
)
@click.option(
    "--webhook-secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="File holding the endpoint's signing secret (whsec_...), from the Segments.ai "
    "webhook portal. Never logged.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Port to listen on (0: a free one; the URL is printed on stdout).",
)
@interval_option("Time between safety-net sync cycles (30s, 10m, 1h); the first runs at start.")
@click.option(
    "--queue-size",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Samples waiting at most; beyond, deliveries get 503 and the sender retries.",
)
def serve(
    args: LabelingArgs,
    webhook_secret_file: Path,
    host: str,
    port: int,
    interval: str,
    queue_size: int,
) -> None:
    """Pre-label new samples as Segments.ai webhooks announce them, until stopped.

    POST /webhooks/segments takes signed deliveries (Svix): sample.created pre-labels
    the sample, label.deleted re-checks it, everything else is acknowledged. A sync
    cycle runs at start and every --interval, so a missed webhook only delays a sample.
    GET /healthz, /readyz (models loaded, API reachable) and /metrics (Prometheus) are
    for the platform. SIGTERM answers 503 to new deliveries, finishes the samples in
    progress and exits 0. Samples are labeled with `prelabel run`'s rules and state.
    A refused key, a bad config or models that cannot load stop it with exit code 2.

    \b
    Example:
      export SEGMENTS_API_KEY=...     # never printed or logged
      prelabel serve --dataset jane/streets --models ~/models --port 8080 \\
          --webhook-secret-file /run/secrets/webhook-secret --log-format json
    """
    from prelabel.run.sync import parse_interval
    from prelabel.serve.adapter import create_worker_service
    from prelabel.serve.server import listen
    from prelabel.serve.server import serve as serve_http
    from prelabel.serve.service import ServeConfig
    from prelabel.serve.webhooks import check_secret
    from prelabel.state import StateStore

    secret = _read_secret(webhook_secret_file)
    key, settings = args.key_and_settings(secret, secret.removeprefix("whsec_"))
    check_start(settings, args.models_dir)
    with usage_errors():
        check_secret(secret)
        config = ServeConfig(
            datasets=tuple(dict.fromkeys(args.datasets)),
            labelset=args.labelset,
            interval_s=parse_interval(interval),
            queue_size=queue_size,
        )
    try:
        sock = listen(host, port)
    except OSError as exc:
        raise UsageFailure(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    with sock, StateStore.in_dir(args.state_dir) as state, _at_least_info_logging():
        service, lifecycle, deliveries = create_worker_service(
            config,
            api_key=key,
            webhook_secret=secret,
            settings=settings,
            state=state,
            load_pipeline=checked_loader(settings, args.models_dir),
            output_dir=args.output_dir,
            overwrite_prelabels=args.overwrite_prelabels,
            retry_failed=args.retry_failed,
        )
        try:
            _prepare(lifecycle, config.datasets)
            bound_host, bound_port = sock.getsockname()[:2]
            click.echo(f"http://{bound_host}:{bound_port}/")
            sys.stdout.flush()  # the first line: a script waiting for the URL gets it now
            serve_http(service, sock)
        finally:
            lifecycle.close()
            deliveries.close()
    _exit_on(service.fatal)


@contextmanager
def _at_least_info_logging() -> Iterator[None]:
    """A service reports each sample (INFO; -v adds debug); the level is restored after, for a
    process that goes on (tests invoke the command in process)."""
    root = logging.getLogger()
    previous = root.level
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.setLevel(previous)


def _prepare(lifecycle: Lifecycle, datasets: Iterable[str]) -> None:
    """Check every dataset before serving: what will not fix itself is a usage error (exit 2);
    an API that is down now is left to the cycles."""
    from prelabel.errors import PrelabelError, TransientRemoteError

    for name in datasets:
        try:
            lifecycle.prepare(name)
        except TransientRemoteError as exc:
            logger.warning("cannot check %s now (%s); serving, cycles will retry", name, exc)
        except PrelabelError as exc:
            raise UsageFailure(str(exc)) from None


def _exit_on(fatal: BaseException | None) -> None:
    """The service stopped on ``fatal``: one of prelabel's errors (a refused key, a bad config,
    models that cannot load) exits as ``prelabel run`` does, code 2 and the same message,
    whichever worker met it first; anything else is a bug (exit 1)."""
    from prelabel.errors import PrelabelError

    if isinstance(fatal, PrelabelError):
        raise UsageFailure(str(fatal))
    if fatal is not None:
        raise click.ClickException(f"stopped: {fatal}")


def _read_secret(path: Path) -> str:
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UsageFailure(f"cannot read --webhook-secret-file {path}: {exc.strerror}") from None
    if not secret:
        raise UsageFailure(f"{path} is empty")
    return secret
