"""The emulator delivers webhooks like Segments.ai through Svix (``shared/segments-api.md`` 11.8).

A small receiver in the test records what arrives and checks each delivery with the ``svix``
library, which was not used to sign it (the emulator signs with its own HMAC): each implementation
checks the other. The last tests let the emulator drive ``prelabel serve`` end to end, and run
``prelabel emulator --webhook-url`` as a process.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from segments import SegmentsClient
from segments.typing import LabelStatus
from svix.webhooks import Webhook

from prelabel.emulator import Emulator
from prelabel.emulator.webhooks import WebhookConfig
from prelabel.serve.server import listen
from tests.connector_helpers import wait_for
from tests.fixtures.emulator import DEMO_CATEGORIES, EMULATOR_API_KEY, png_bytes
from tests.serve_helpers import GT, new_secret, running_service

REPO = Path(__file__).resolve().parents[1]
CATEGORIES = {"format_version": "0.1", "categories": [dict(c) for c in DEMO_CATEGORIES]}


@dataclass
class Received:
    """What the receiver saw: per delivery the headers, the raw body and its arrival time."""

    deliveries: list[tuple[dict[str, str], bytes, float]] = field(default_factory=list)
    #: Statuses to answer with, in order; 200 once they are used up.
    answers: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(body) for _, body, _ in self.deliveries]


@pytest.fixture
def receiver() -> Iterator[tuple[str, Received]]:
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with received.lock:
                received.deliveries.append(
                    ({k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                )
                status = received.answers.pop(0) if received.answers else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()
    thread.join()


def webhook_emulator(url: str, secret: str, **options: Any) -> Emulator:
    config = WebhookConfig(url=url, secret=secret, retry_delays_s=(0.05, 0.05), **options)
    return Emulator(EMULATOR_API_KEY, webhooks=config)


def test_api_writes_are_delivered_signed_so_that_svix_accepts_them(
    receiver: tuple[str, Received],
) -> None:
    url, received = receiver
    secret = new_secret()
    with webhook_emulator(url, secret) as emulator:
        client = SegmentsClient(EMULATOR_API_KEY, api_url=emulator.url)
        dataset = client.add_dataset("demo", task_attributes=CATEGORIES).full_name
        image = client.upload_asset(io.BytesIO(png_bytes(8, 8, seed=0)), "a.png").url
        sample = client.add_sample(dataset, "a.png", {"image": {"url": image}}).uuid
        attributes = {
            "format_version": "0.1",
            "annotations": [],
            "segmentation_bitmap": {"url": image},
        }
        client.add_label(sample, GT, attributes, label_status=LabelStatus.PRELABELED)
        client.delete_label(sample, GT)
        assert emulator.webhooks.wait_idle(10)
        client.close()
    # Three events a few milliseconds apart go out on different sender threads: like Svix, the
    # emulator does not promise they arrive in order (serve re-reads the sample for that reason).
    kinds = sorted((b["event_type"], b["dataset"]) for b in received.bodies())
    assert kinds == [(e, dataset) for e in ("label.deleted", "label.updated", "sample.created")]
    objects = {b["event_type"]: b["object"] for b in received.bodies()}
    created, updated, deleted = (
        objects[e] for e in ("sample.created", "label.updated", "label.deleted")
    )
    assert created["uuid"] == sample and created["name"] == "a.png"
    assert (updated["sample_uuid"], updated["label_status"]) == (sample, "PRELABELED")
    assert deleted == {"sample_uuid": sample, "labelset": GT}
    ids = set()
    for headers, body, _ in received.deliveries:
        Webhook(secret).verify(body, headers)  # raises if the emulator's signature is wrong
        assert (
            headers["svix-id"].startswith("msg_") and headers["content-type"] == "application/json"
        )
        ids.add(headers["svix-id"])
    assert len(ids) == 3


def test_a_refused_delivery_is_retried_with_the_same_message_id_then_given_up(
    receiver: tuple[str, Received],
) -> None:
    url, received = receiver
    received.answers = [503, 200, 500, 500, 503]  # the first message gets through at attempt 2
    with webhook_emulator(url, new_secret(), header_prefix="webhook") as emulator:
        sender = emulator.webhooks
        first = sender.emit("sample.created", "jane/demo", {"uuid": "s1"})
        assert sender.wait_idle(10)
        second = sender.emit("sample.created", "jane/demo", {"uuid": "s2"})
        assert sender.wait_idle(10)
        attempts = [(d.message_id, d.attempt, d.status) for d in sender.deliveries]
    assert attempts == [(first, 1, 503), (first, 2, 200)] + [
        (second, n, status) for n, status in ((1, 500), (2, 500), (3, 503))
    ]
    assert [h["webhook-id"] for h, _, _ in received.deliveries] == [first] * 2 + [second] * 3
    assert len({body for _, body, _ in received.deliveries[:2]}) == 1  # the same bytes


def test_duplicate_and_delay_injection(receiver: tuple[str, Received]) -> None:
    url, received = receiver
    with webhook_emulator(url, new_secret(), duplicate_rate=1.0, delay_s=0.3) as emulator:
        emitted = time.monotonic()
        message = emulator.webhooks.emit("sample.created", "jane/demo", {"uuid": "s1"})
        assert emulator.webhooks.wait_idle(10)
        # The copy leaves 10 ms after the original, on another sender thread: either may be
        # answered (and logged) first, as with Svix, so the log is compared without its order.
        assert sorted(d.duplicate for d in emulator.webhooks.deliveries) == [False, True]
    assert [h["svix-id"] for h, _, _ in received.deliveries] == [message, message]
    assert min(arrived for _, _, arrived in received.deliveries) - emitted >= 0.3


@pytest.mark.slow
def test_the_emulators_webhooks_drive_serve_end_to_end(tmp_path: Path) -> None:
    """Every sample.created arrives twice; each sample is labeled once, and the echo of each
    pre-label write (label.updated, PRELABELED), also twice, is ignored."""
    secret = new_secret()
    sock = listen("127.0.0.1", 0)
    hook = f"http://127.0.0.1:{sock.getsockname()[1]}/webhooks/segments"
    with webhook_emulator(hook, secret, duplicate_rate=1.0) as emulator:
        client = SegmentsClient(EMULATOR_API_KEY, api_url=emulator.url)
        dataset = client.add_dataset("demo", task_attributes=CATEGORIES).full_name
        image = client.upload_asset(io.BytesIO(png_bytes(16, 12, seed=1)), "a.png").url
        with running_service(emulator, tmp_path, (dataset,), secret=secret, sock=sock) as svc:
            uuids = [
                client.add_sample(dataset, f"s{i}.png", {"image": {"url": image}}).uuid
                for i in range(3)
            ]
            wait_for(
                lambda: all(emulator.label_write_count(u, GT) for u in uuids), 20, "the labels"
            )
            assert emulator.webhooks.wait_idle(10)
            svc.wait_idle()
            metrics = svc.metrics()
        deliveries = emulator.webhooks.deliveries
        writes = emulator.label_write_counts()
        client.close()
    assert len(writes) == 3 and set(writes.values()) == {1}
    assert len(deliveries) == 12 and {d.status for d in deliveries} <= {200, 202}
    results = {
        result: metrics[f'prelabel_webhook_deliveries_total{{result="{result}"}}']
        for result in ("accepted", "duplicate", "ignored", "rejected")
    }
    assert results == {"accepted": 3, "duplicate": 6, "ignored": 3, "rejected": 0}


def test_prelabel_emulator_webhook_options(receiver: tuple[str, Received], tmp_path: Path) -> None:
    url, received = receiver
    secret_file = tmp_path / "secret"
    secret_file.write_text(new_secret() + "\n")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prelabel",
            "emulator",
            "--port",
            "0",
            "--webhook-url",
            url,
            "--webhook-secret-file",
            str(secret_file),
            "--webhook-duplicate-rate",
            "1",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        api = process.stdout.readline().strip()
        client = SegmentsClient("emulator-key", api_url=api)
        dataset = client.add_dataset("demo", task_attributes=CATEGORIES).full_name
        sample = client.add_sample(dataset, "a.png", {"image": {"url": "http://x/a.png"}}).uuid
        client.close()
        wait_for(lambda: len(received.deliveries) == 2, 10, "the delivery and its duplicate")
        log: dict[str, Any] = {}

        def logged() -> bool:  # the emulator logs an attempt once the receiver has answered
            log.update(requests.get(api + "_emulator/webhooks", timeout=5).json())
            return len(log["deliveries"]) == 2

        wait_for(logged, 10, "the emulator's delivery log")
        logged_attempts = [
            (d["event_type"], d["status"], d["duplicate"]) for d in log["deliveries"]
        ]
        assert sorted(logged_attempts) == [  # in the order answered: the copy may be first
            ("sample.created", 200, False),
            ("sample.created", 200, True),
        ]
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
        process.stdout.close()  # type: ignore[union-attr]
    headers, body, _ = received.deliveries[0]
    Webhook(secret_file.read_text().strip()).verify(body, headers)
    assert json.loads(body)["object"]["uuid"] == sample


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--webhook-url", "http://127.0.0.1:1/"], "go together"),
        (["--webhook-url", "http://127.0.0.1:1/", "--webhook-secret-file", "BAD"], "secret"),
    ],
)
def test_webhook_options_are_checked(args: list[str], message: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from prelabel.cli.emulator import emulator as emulator_command

    bad = tmp_path / "bad-secret"
    bad.write_text("not base64!")
    args = [str(bad) if a == "BAD" else a for a in args]
    result = CliRunner().invoke(emulator_command, ["--port", "0", *args])
    assert result.exit_code == 2 and message in result.output
