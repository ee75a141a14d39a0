"""Helpers for the ``prelabel serve`` tests: signed deliveries, a service on a real port.

Deliveries are signed in the test with the ``svix`` library (``shared/segments-api.md`` 11.7)
and POSTed over HTTP. The service runs in process (uvicorn in a thread) through the same
:func:`~prelabel.serve.adapter.create_worker_service` the CLI uses, against the in-test emulator
through the real SDK. Only the model is replaced, by :class:`StandInPipeline`, where the test is
about the webhook path and not about predictions: tiny random models take about 0.5 s an image
on this CPU, and these tests label up to a thousand samples.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import requests
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from segments import SegmentsClient
from svix.webhooks import Webhook

from prelabel.emulator import Emulator
from prelabel.panoptic import PanopticPrediction, Segment
from prelabel.serve.adapter import WorkerLifecycle, create_worker_service
from prelabel.serve.server import listen, serve
from prelabel.serve.service import ServeConfig, Service
from prelabel.state import StateStore
from prelabel.taxonomy import Taxonomy
from tests.connector_helpers import make_settings, wait_for
from tests.fixtures.emulator import EMULATOR_API_KEY

GT = "ground-truth"


def new_secret() -> str:
    """A throwaway Svix endpoint secret."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def envelope(event_type: str, dataset: str, obj: dict[str, Any]) -> str:
    """A compact webhook body (11.3), signed and sent byte for byte."""
    data = {
        "event_type": event_type,
        "created_at": datetime.now(UTC).isoformat(),
        "api_version": "2021-08-01",
        "dataset": dataset,
        "object": obj,
        "text": f"{event_type} in {dataset}",
    }
    return json.dumps(data, separators=(",", ":"))


def sample_created(dataset: str, sample_uuid: str) -> str:
    return envelope("sample.created", dataset, {"uuid": sample_uuid, "name": "x.png"})


def signed(
    secret: str,
    body: str,
    msg_id: str,
    *,
    at: datetime | None = None,
    prefix: str = "svix",
) -> dict[str, str]:
    """The three Svix headers for ``body``, signed now (aware UTC, as 11.7 warns) or at ``at``."""
    at = at or datetime.now(UTC)
    return {
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(int(at.timestamp())),
        f"{prefix}-signature": Webhook(secret).sign(msg_id, at, body),
    }


#: Every delivery ``shared/segments-api.md`` 11.5 says must fail verification.
REJECTED_CASES = (
    "wrong secret",
    "tampered body",
    "re-serialised body",
    "forged signature",
    "asymmetric entry only",
    "signature not base64",
    "signature without a comma",
    "six minutes old",
    "six minutes ahead",
    "missing id",
    "missing signature",
    "missing timestamp",
    "no headers",
    "timestamp not a number",
    "non-UTF-8 body",
)


def rejected_delivery(case: str, secret: str, body: str) -> tuple[bytes, dict[str, str]]:
    """Body and headers of one :data:`REJECTED_CASES` case, signed now."""
    good = signed(secret, body, "msg_bad")
    now = datetime.now(UTC)
    six = timedelta(minutes=6)
    raw = body.encode()
    cases: dict[str, tuple[bytes, dict[str, str]]] = {
        "wrong secret": (raw, signed(new_secret(), body, "msg_bad")),
        "tampered body": (body.replace("sample", "sampel").encode(), good),
        # json.dumps adds spaces: the same JSON, no longer the signed bytes
        "re-serialised body": (json.dumps(json.loads(body)).encode(), good),
        "forged signature": (raw, {**good, "svix-signature": "v1," + "A" * 44}),
        "asymmetric entry only": (raw, {**good, "svix-signature": "v1a,AAAA"}),
        "signature not base64": (raw, {**good, "svix-signature": "v1,@@@"}),
        "signature without a comma": (raw, {**good, "svix-signature": "garbage"}),
        "six minutes old": (raw, signed(secret, body, "msg_bad", at=now - six)),
        "six minutes ahead": (raw, signed(secret, body, "msg_bad", at=now + six)),
        "missing id": (raw, {k: v for k, v in good.items() if k != "svix-id"}),
        # an id alone must not pass for a delivery: absent headers are checked, never skipped
        "missing signature": (raw, {k: v for k, v in good.items() if k != "svix-signature"}),
        "missing timestamp": (raw, {k: v for k, v in good.items() if k != "svix-timestamp"}),
        "no headers": (raw, {}),
        "timestamp not a number": (raw, {**good, "svix-timestamp": "yesterday"}),
        "non-UTF-8 body": (b"\xff\xfe" + raw, good),
    }
    return cases[case]


class StandInPipeline:
    """A deterministic, instant stand-in for the model: one stuff segment on the left half."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls = 0
        self._gate = gate
        self._lock = threading.Lock()

    def predict(self, image: Image.Image, taxonomy: Taxonomy, **_: Any) -> PanopticPrediction:
        if self._gate is not None:
            self._gate.wait(30)
        with self._lock:
            self.calls += 1
        width, height = image.size
        id_map = np.zeros((height, width), dtype=np.uint32)
        id_map[:, : max(1, width // 2)] = 1
        category = (taxonomy.stuff or taxonomy.things)[0].category_id
        area = int(id_map.astype(bool).sum())
        segment = Segment(1, category, False, 0.5, area, (0, 0, max(1, width // 2), height))
        return PanopticPrediction(id_map, (segment,))

    def predict_batch(
        self, images: list[Image.Image], taxonomy: Taxonomy, **kwargs: Any
    ) -> list[PanopticPrediction]:
        return [self.predict(image, taxonomy, **kwargs) for image in images]


def image_url(client: SegmentsClient, sample_uuid: str) -> str:
    """The image URL of an image sample, read through the SDK."""
    attributes = client.get_sample(sample_uuid).attributes
    image = getattr(attributes, "image", None)
    assert image is not None and image.url, f"sample {sample_uuid} has no image"
    return str(image.url)


def parse_metrics(text: str) -> dict[str, float]:
    """``{'name{label="v"}': value}`` for every sample, through prometheus_client's parser."""
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


@dataclass
class RunningService:
    url: str
    secret: str
    service: Service
    lifecycle: WorkerLifecycle
    session: requests.Session

    def deliver(self, body: str | bytes, headers: dict[str, str]) -> requests.Response:
        return self.session.post(self.url + "webhooks/segments", data=body, headers=headers)

    def deliver_signed(self, body: str, msg_id: str, **sign: Any) -> requests.Response:
        return self.deliver(body, signed(self.secret, body, msg_id, **sign))

    def metrics(self) -> dict[str, float]:
        return parse_metrics(self.session.get(self.url + "metrics").text)

    def wait_idle(self, timeout: float = 30) -> None:
        """Until the queue is empty and nothing is being labeled from it."""
        wait_for(lambda: self.service.idle, timeout, "the webhook queue to drain")


@contextmanager
def running_service(
    emulator: Emulator,
    tmp_path: Path,
    datasets: tuple[str, ...],
    *,
    pipeline: Any = None,
    secret: str | None = None,
    queue_size: int = 10_000,
    interval_s: float = 3600.0,
    state_dir: str = "state",
    sock: socket.socket | None = None,
    **settings_overrides: Any,
) -> Iterator[RunningService]:
    """A serving ``prelabel serve`` whose first sync cycle has finished.

    ``sock``: a socket from :func:`~prelabel.serve.server.listen` to serve on, for an emulator
    that must know the webhook URL before the service starts.
    """
    secret = secret or new_secret()
    settings = make_settings(emulator.url, **settings_overrides)
    state = StateStore.in_dir(tmp_path / state_dir)
    config = ServeConfig(
        datasets=datasets, interval_s=interval_s, queue_size=queue_size, probe_interval_s=0.2
    )
    model = pipeline or StandInPipeline()
    service, lifecycle, deliveries = create_worker_service(
        config,
        api_key=EMULATOR_API_KEY,
        webhook_secret=secret,
        settings=settings,
        state=state,
        load_pipeline=lambda: model,
        output_dir=tmp_path / "out",
    )
    sock = sock or listen("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    thread = threading.Thread(target=serve, args=(service, sock), name="test-serve")
    thread.start()
    session = requests.Session()
    running = RunningService(url, secret, service, lifecycle, session)
    try:
        wait_for(lambda: _ready(session, url), 30, "/readyz to answer 200")
        wait_for(
            lambda: running.metrics()["prelabel_last_cycle_success_timestamp_seconds"] > 0,
            30,
            "the first sync cycle",
        )
        yield running
    finally:
        service.begin_drain()
        thread.join(60)
        session.close()
        lifecycle.close()
        deliveries.close()
        state.close()
        sock.close()
    assert not thread.is_alive(), "the service did not stop"
    assert service.fatal is None, f"the service stopped on {service.fatal!r}"


def _ready(session: requests.Session, url: str) -> bool:
    try:
        return session.get(url + "readyz", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False
