"""A burst of 1,000 ``sample.created`` deliveries (plus resent duplicates) within seconds.

Every response must come within :data:`SLOWEST_ANSWER_S` (Svix gives up on an endpoint after
~15 s, and the handler only queues), every sample must be labeled exactly once (the emulator
counts label writes), and ``/metrics``, parsed with ``prometheus_client``'s parser, must agree
with the emulator. The model is :class:`~tests.serve_helpers.StandInPipeline` (instant,
deterministic): the pipeline is not under test here, the webhook path and the worker's write
path are, through the real SDK against the emulator.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from segments import SegmentsClient

from prelabel.emulator import Emulator
from tests.connector_helpers import wait_for
from tests.fixtures.emulator import seed_dataset_via_sdk
from tests.serve_helpers import GT, image_url, running_service, sample_created, signed

SAMPLES = 1000
DUPLICATES = 100
SENDERS = 8
#: A fifth of Svix's timeout. The answers take about 0.1 s; a handler that waited on the queued
#: work would take tens of seconds (the burst is labeled in about 50 s). On the loaded 2-core CI
#: machine (the Ray tests on the other core) one answer of 1,100 took 1.03 s, over the 1.0 s
#: this bound used to be, with nothing wrong in the handler.
SLOWEST_ANSWER_S = 3.0

pytestmark = pytest.mark.slow


def test_a_burst_of_deliveries_labels_every_sample_exactly_once(
    emulator: Emulator, segments_client: SegmentsClient, tmp_path: Path
) -> None:
    dataset = seed_dataset_via_sdk(segments_client, n_images=1)
    url = image_url(segments_client, dataset.sample_uuids[0])
    with running_service(emulator, tmp_path, (dataset.full_name,)) as svc:
        uuids = emulator.add_samples(
            dataset.full_name,
            [
                {"name": f"burst_{i:04d}.png", "attributes": {"image": {"url": url}}}
                for i in range(SAMPLES)
            ],
        )
        messages = [
            (f"msg_{i:04d}", sample_created(dataset.full_name, u)) for i, u in enumerate(uuids)
        ]
        resent = random.Random(0).sample(messages, DUPLICATES)
        sessions = threading.local()

        def send(message: tuple[str, str]) -> tuple[str, int, float]:
            msg_id, body = message
            if not hasattr(sessions, "session"):
                sessions.session = requests.Session()
            started = time.monotonic()
            answer = sessions.session.post(
                svc.url + "webhooks/segments", data=body, headers=signed(svc.secret, body, msg_id)
            )
            return msg_id, answer.status_code, time.monotonic() - started

        started = time.monotonic()
        with ThreadPoolExecutor(SENDERS) as pool:
            answers = list(pool.map(send, messages + resent))
        sent_in = time.monotonic() - started
        wait_for(lambda: svc.service.idle, 120, "the burst to be labeled")
        labeled_in = time.monotonic() - started
        metrics = svc.metrics()

    slowest = max(seconds for _, _, seconds in answers)
    print(f"\n{len(answers)} deliveries sent in {sent_in:.1f} s (slowest answer {slowest:.3f} s), "
          f"all labeled after {labeled_in:.1f} s")  # fmt: skip
    assert slowest < SLOWEST_ANSWER_S
    statuses: dict[str, list[int]] = {}
    for msg_id, status, _ in answers:
        statuses.setdefault(msg_id, []).append(status)
    resent_ids = {message[0] for message in resent}
    for msg_id, codes in statuses.items():
        assert sorted(codes) == ([200, 202] if msg_id in resent_ids else [202]), msg_id
    writes = emulator.label_write_counts()
    assert all(writes.get((uuid, GT)) == 1 for uuid in uuids)
    assert set(writes.values()) == {1}  # the seeded sample too, by the first cycle
    assert metrics['prelabel_samples_total{result="labeled"}'] == sum(writes.values())
    assert metrics['prelabel_samples_total{result="failed"}'] == 0
    assert metrics['prelabel_webhook_deliveries_total{result="accepted"}'] == SAMPLES
    assert metrics['prelabel_webhook_deliveries_total{result="duplicate"}'] == DUPLICATES
    assert metrics['prelabel_webhook_deliveries_total{result="refused"}'] == 0
    assert metrics["prelabel_queue_depth"] == 0
    assert metrics["prelabel_inference_seconds_count"] == sum(writes.values())
