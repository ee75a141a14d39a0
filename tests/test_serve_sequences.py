"""``prelabel serve`` on an image-sequence dataset (issue 21): the first sync cycle labels the
sequences already there, and a sample.created webhook labels one added later, through the same
steps as ``prelabel run`` (tiny models, emulator, real SDK). Labels obey spec 10.6."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from segments import SegmentsClient

from prelabel.emulator import Emulator
from prelabel.emulator.sequences import frame_timestamp, moving_shapes, seed_sequence_dataset
from prelabel.run.models import pipeline_loader
from prelabel.serve.adapter import create_worker_service
from prelabel.serve.server import listen, serve
from prelabel.serve.service import ServeConfig
from prelabel.state import StateStore
from tests.connector_helpers import make_settings, wait_for
from tests.fixtures.emulator import DEMO_CATEGORIES, EMULATOR_API_KEY
from tests.serve_helpers import new_secret, sample_created, signed
from tests.test_run_sequences import assert_valid_sequence_prelabel

DATASET = "jane/clips"


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def serving(emulator: Emulator, tmp_path: Path, tiny_models_dir: Path) -> Iterator[dict[str, Any]]:
    """A serving worker over ``jane/clips`` (one clip seeded) whose first cycle has finished."""
    seeded = seed_sequence_dataset(
        emulator, DATASET, {"walk": list(moving_shapes(3, seed=1))}, DEMO_CATEGORIES
    )
    settings = make_settings(emulator.url)
    secret = new_secret()
    state = StateStore.in_dir(tmp_path / "state")
    service, lifecycle, deliveries = create_worker_service(
        ServeConfig(datasets=(DATASET,), interval_s=3600.0, probe_interval_s=0.2),
        api_key=EMULATOR_API_KEY,
        webhook_secret=secret,
        settings=settings,
        state=state,
        load_pipeline=pipeline_loader(settings, tiny_models_dir),
        output_dir=tmp_path / "out",
    )
    lifecycle.prepare(DATASET)  # a sequence dataset is servable
    sock = listen("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    thread = threading.Thread(target=serve, args=(service, sock), daemon=True)
    thread.start()
    try:
        wait_for(lambda: emulator.label_write_count(seeded.sample_uuids[0]) == 1, 300, "cycle")
        yield {"service": service, "url": url, "secret": secret, "walk": seeded.sample_uuids[0]}
    finally:
        service.begin_drain()
        thread.join(120)
        lifecycle.close()
        deliveries.close()
        state.close()
        sock.close()
    assert service.fatal is None, repr(service.fatal)


def test_serve_labels_sequences_in_its_cycle_and_from_a_webhook(
    emulator: Emulator, segments_client: SegmentsClient, serving: dict[str, Any]
) -> None:
    walk = list(moving_shapes(3, seed=1))
    assert_valid_sequence_prelabel(segments_client, serving["walk"], walk)  # the cycle's

    later = list(moving_shapes(4, seed=2))
    frames = [
        {
            "image": {"url": emulator.add_asset(_png(scene.image), f"late-{i}.png")},
            "name": f"frame_{i:05d}",
            "timestamp": frame_timestamp(i),
        }
        for i, scene in enumerate(later)
    ]
    [uuid] = emulator.add_samples(DATASET, [{"name": "late", "attributes": {"frames": frames}}])
    body = sample_created(DATASET, uuid)
    headers = signed(serving["secret"], body, "msg_late")
    answer = requests.post(serving["url"] + "webhooks/segments", data=body, headers=headers)

    assert answer.status_code in (200, 202, 204), answer.text
    wait_for(lambda: emulator.label_write_count(uuid) == 1, 300, "the webhook's sequence")
    assert_valid_sequence_prelabel(segments_client, uuid, later)
    assert emulator.label_write_count(serving["walk"]) == 1
