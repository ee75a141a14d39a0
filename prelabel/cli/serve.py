"""``prelabel serve``: pre-label samples as Segments.ai webhooks announce them."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from prelabel.cli._common import CONTEXT_SETTINGS, UsageFailure
from prelabel.cli._logging import log_format_option, use_log_format
from prelabel.cli.run import (
    apply_overrides,
    install_redaction,
    pipeline_loader,
    read_api_key,
    remote_options_many,
)

logger = logging.getLogger(__name__)


@click.command(context_settings=CONTEXT_SETTINGS)
@remote_options_many
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
@click.option(
    "--interval",
    default="10m",
    show_default=True,
    help="Time between safety-net sync cycles (30s, 10m, 1h); the first runs at start.",
)
@click.option(
    "--queue-size",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Samples waiting at most; beyond, deliveries get 503 and the sender retries.",
)
@click.option(
    "--overwrite-prelabels",
    is_flag=True,
    help="In the first cycle, also redo samples whose label is still PRELABELED.",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("prelabel-output"),
    show_default=True,
    help="Where the latest cycle's and webhook batch's report.json go, per dataset.",
)
@log_format_option
def serve(
    dataset: tuple[str, ...],
    api_url: str | None,
    labelset: str,
    api_key_file: Path | None,
    state_dir: Path | None,
    models_dir: Path | None,
    config_path: Path | None,
    device: str | None,
    quiet: bool,
    webhook_secret_file: Path,
    host: str,
    port: int,
    interval: str,
    queue_size: int,
    overwrite_prelabels: bool,
    output_dir: Path,
    log_format: str,
) -> None:
    """Pre-label new samples as Segments.ai webhooks announce them, until stopped.

    POST /webhooks/segments takes signed deliveries (Svix): sample.created pre-labels
    the sample, label.deleted re-checks it, everything else is acknowledged. A sync
    cycle runs at start and every --interval, so a missed webhook only delays a sample.
    GET /healthz, /readyz (models loaded, API reachable) and /metrics (Prometheus) are
    for the platform. SIGTERM answers 503 to new deliveries, finishes the samples in
    progress and exits 0. Samples are labeled with `prelabel run`'s rules and state.

    \b
    Example:
      export SEGMENTS_API_KEY=...     # never printed or logged
      prelabel serve --dataset jane/streets --models ~/models --port 8080 \\
          --webhook-secret-file /run/secrets/webhook-secret --log-format json
    """
    from prelabel.config import load_settings
    from prelabel.errors import PrelabelError, TransientRemoteError
    from prelabel.serve.adapter import create_worker_service
    from prelabel.serve.server import listen
    from prelabel.serve.server import serve as serve_http
    from prelabel.serve.service import ServeConfig
    from prelabel.serve.webhooks import check_secret
    from prelabel.state import StateStore, default_state_dir
    from prelabel.sync import parse_interval

    key = read_api_key(api_key_file)
    secret = _read_secret(webhook_secret_file)
    secrets = (key, secret, secret.removeprefix("whsec_"))
    for value in secrets:
        install_redaction(value)
    use_log_format(log_format, secrets)
    root = logging.getLogger()
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)  # a service reports each sample; -v adds debug
    try:
        check_secret(secret)
        settings = apply_overrides(load_settings(config_path), api_url=api_url, device=device)
        config = ServeConfig(
            datasets=tuple(dict.fromkeys(dataset)),
            labelset=labelset,
            interval_s=parse_interval(interval),
            queue_size=queue_size,
        )
    except PrelabelError as exc:
        raise UsageFailure(str(exc)) from None
    try:
        sock = listen(host, port)
    except OSError as exc:
        raise UsageFailure(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    state = StateStore.in_dir(state_dir or default_state_dir())
    service, lifecycle, deliveries = create_worker_service(
        config,
        api_key=key,
        webhook_secret=secret,
        settings=settings,
        state=state,
        load_pipeline=pipeline_loader(settings, models_dir),
        output_dir=output_dir,
        overwrite_prelabels=overwrite_prelabels,
    )
    try:
        for name in config.datasets:
            try:
                lifecycle.prepare(name)
            except TransientRemoteError as exc:
                logger.warning("cannot check %s now (%s); serving, cycles will retry", name, exc)
            except PrelabelError as exc:
                raise UsageFailure(str(exc)) from None
        bound_host, bound_port = sock.getsockname()[:2]
        click.echo(f"http://{bound_host}:{bound_port}/")
        sys.stdout.flush()  # the first line: a script waiting for the URL gets it now
        serve_http(service, sock)
    finally:
        sock.close()
        lifecycle.close()
        deliveries.close()
        state.close()
    if service.fatal is not None:
        raise click.ClickException(f"stopped: {service.fatal}")


def _read_secret(path: Path) -> str:
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UsageFailure(f"cannot read --webhook-secret-file {path}: {exc.strerror}") from None
    if not secret:
        raise UsageFailure(f"{path} is empty")
    return secret
