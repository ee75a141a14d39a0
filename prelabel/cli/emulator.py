"""``prelabel emulator``: serve a local Segments.ai API emulator until interrupted."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import click

from prelabel.cli._common import CONTEXT_SETTINGS

TRIAL_API_KEY = "emulator-key"


@click.command("emulator", context_settings=CONTEXT_SETTINGS)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="0 = a free port."
)
@click.option(
    "--api-key",
    envvar="SEGMENTS_API_KEY",
    default=TRIAL_API_KEY,
    show_default=True,
    help="Key the emulator accepts (env SEGMENTS_API_KEY). Never use a real key here.",
)
@click.option("--username", default="jane", show_default=True, help="User the key belongs to.")
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Keep state in this SQLite file across restarts (default: in memory).",
)
@click.option(
    "--seed-images",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Create one sample per image in this folder (needs --categories and --dataset).",
)
@click.option(
    "--categories",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Taxonomy YAML: categories: [{id, name, has_instances, color}].",
)
@click.option("--dataset", metavar="OWNER/NAME", help="Dataset to create when seeding.")
@click.option("--task-type", default="segmentation-bitmap", show_default=True)
@click.option("--latency-ms", type=click.FloatRange(min=0), default=0.0, help="Added latency.")
@click.option(
    "--error-rate", type=click.FloatRange(0, 1), default=0.0, help="Share of 500/502/503 answers."
)
@click.option(
    "--throttle-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Share of 429 answers with Retry-After.",
)
@click.option(
    "--retry-after", type=click.IntRange(min=0), default=1, show_default=True, help="Seconds."
)
@click.option(
    "--drop-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Share of connections closed without an answer.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fault dice.")
@click.option(
    "--webhook-url",
    help="POST signed webhooks (sample.created, label.updated, label.deleted) here after each "
    "API write, as Segments.ai does; e.g. http://127.0.0.1:8080/webhooks/segments.",
)
@click.option(
    "--webhook-secret-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File holding the whsec_ secret to sign webhooks with (goes with --webhook-url).",
)
@click.option(
    "--webhook-duplicate-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Share of webhooks delivered twice (same message id).",
)
@click.option(
    "--webhook-delay-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Hold each webhook back this long before its first attempt.",
)
def emulator(
    host: str,
    port: int,
    api_key: str,
    username: str,
    db: Path | None,
    seed_images: Path | None,
    categories: Path | None,
    dataset: str | None,
    task_type: str,
    latency_ms: float,
    error_rate: float,
    throttle_rate: float,
    retry_after: int,
    drop_rate: float,
    seed: int,
    webhook_url: str | None,
    webhook_secret_file: Path | None,
    webhook_duplicate_rate: float,
    webhook_delay_ms: float,
) -> None:
    """Serve a local Segments.ai API emulator for the real SDK until Ctrl-C or SIGTERM.

    The first line on stdout is the base URL, printed once any seeding is done; pass it as
    `api_url` to `SegmentsClient`. Status lines go to stderr. Faults (latency, errors,
    throttling, drops) apply to every API route; tests can change them at runtime through
    POST /_emulator/faults. With --webhook-url, every API write that Segments.ai
    announces by webhook is POSTed there, signed like Svix (retried on non-2xx).

    Example:

    \b
        prelabel emulator --port 8765 --seed-images ./images \\
            --categories taxonomy.yaml --dataset jane/demo
        # then, in Python:
        client = SegmentsClient("emulator-key", api_url="http://127.0.0.1:8765/")
        client.get_samples("jane/demo")
    """
    import sqlite3

    from prelabel.emulator import Emulator, FaultRule
    from prelabel.emulator.seed import find_images, load_categories, seed_dataset
    from prelabel.emulator.store import Conflict
    from prelabel.emulator.webhooks import WebhookConfig

    seeding = (seed_images, categories, dataset)
    if any(value is not None for value in seeding) and None in seeding:
        raise click.UsageError("--seed-images, --categories and --dataset go together.")
    if error_rate + throttle_rate + drop_rate > 1:
        raise click.UsageError("--error-rate + --throttle-rate + --drop-rate must be <= 1.")
    faults = []
    if latency_ms or error_rate or throttle_rate or drop_rate:
        faults.append(
            FaultRule(
                latency_s=latency_ms / 1000,
                error_rate=error_rate,
                throttle_rate=throttle_rate,
                retry_after_s=retry_after,
                drop_rate=drop_rate,
            )
        )
    try:
        images = find_images(seed_images) if seed_images else []
        taxonomy = load_categories(categories) if categories else []
    except ValueError as error:
        raise click.UsageError(str(error)) from error

    webhooks = None
    if (webhook_url is None) != (webhook_secret_file is None):
        raise click.UsageError("--webhook-url and --webhook-secret-file go together.")
    if webhook_url and webhook_secret_file:
        try:
            webhooks = WebhookConfig(
                url=webhook_url,
                secret=webhook_secret_file.read_text(encoding="utf-8").strip(),
                duplicate_rate=webhook_duplicate_rate,
                delay_s=webhook_delay_ms / 1000,
                seed=seed,
            )
        except ValueError as error:  # the secret is not whsec_<base64>
            raise click.UsageError(f"--webhook-secret-file: {error}") from None
    server = Emulator(
        api_key,
        username=username,
        host=host,
        port=port,
        db_path=db,
        faults=faults,
        seed=seed,
        webhooks=webhooks,
    )
    try:
        server.start()
    except OSError as error:
        raise click.ClickException(f"cannot listen on {host}:{port}: {error}") from error
    except sqlite3.Error as error:
        raise click.ClickException(f"cannot open --db {db}: {error}") from error
    stop = threading.Event()
    previous = {sig: signal.signal(sig, _set_on_signal(stop)) for sig in _STOP_SIGNALS}
    try:
        if images and dataset:
            try:
                result = seed_dataset(server, dataset, images, taxonomy, task_type)
            except ValueError as error:
                raise click.UsageError(str(error)) from error
            except Conflict:
                click.echo(f"{dataset} already exists (kept from --db); not seeded again", err=True)
            else:
                count = len(result.sample_uuids)
                click.echo(f"seeded {result.dataset}: {count} samples", err=True)
        # The URL comes after seeding, so a script that waits for it finds the data in place.
        click.echo(server.url)
        sys.stdout.flush()
        key_source = "--api-key/SEGMENTS_API_KEY" if api_key != TRIAL_API_KEY else "trial default"
        click.echo(f"user {username}, API key from {key_source}", err=True)
        click.echo("serving; Ctrl-C or SIGTERM stops", err=True)
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _set_on_signal(stop: threading.Event) -> Callable[[int, FrameType | None], None]:
    """A signal handler that asks the serve loop to end (so ``finally`` stops the server)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    return handler
