"""``prelabel serve`` over real HTTP: signed deliveries in, labels in the emulator out.

The service runs in process (uvicorn in a thread, built by the CLI's own factory) against the
emulator through the real SDK; deliveries are signed with ``svix`` in the test. Results are read
from the emulator (labels, write counters) and from ``/metrics``, never from log text. The model
is :class:`~tests.serve_helpers.StandInPipeline`: these tests are about the webhook path.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from segments import SegmentsClient

from prelabel.emulator import Emulator, FaultRule
from prelabel.run.outcome import SampleOutcome
from prelabel.serve.adapter import WorkerLifecycle
from prelabel.state import StateStore
from tests.connector_helpers import (
    assert_valid_prelabel,
    human_attributes,
    make_settings,
    outcomes_by_uuid,
    read_report,
    state_record,
    wait_for,
)
from tests.fixtures.emulator import EMULATOR_API_KEY, SeededDataset, seed_dataset_via_sdk
from tests.serve_helpers import (
    GT,
    REJECTED_CASES,
    RunningService,
    StandInPipeline,
    envelope,
    image_url,
    rejected_delivery,
    running_service,
    sample_created,
)


def add_sample(client: SegmentsClient, dataset: SeededDataset, name: str) -> str:
    """A new sample reusing the first sample's image (what a person uploading would add)."""
    url = image_url(client, dataset.sample_uuids[0])
    return str(client.add_sample(dataset.full_name, name, {"image": {"url": url}}).uuid)


def labeled_once(emulator: Emulator, uuids: list[str]) -> bool:
    return all(emulator.label_write_count(uuid, GT) == 1 for uuid in uuids)


@pytest.fixture
def dataset(segments_client: SegmentsClient) -> SeededDataset:
    return seed_dataset_via_sdk(segments_client, n_images=2)


def test_sample_created_pre_labels_that_sample_once(
    emulator: Emulator,
    segments_client: SegmentsClient,
    dataset: SeededDataset,
    tmp_path: Path,
) -> None:
    with running_service(emulator, tmp_path, (dataset.full_name,)) as svc:
        assert labeled_once(emulator, list(dataset.sample_uuids))  # the first cycle did these
        uuid = add_sample(segments_client, dataset, "new.png")
        started = time.monotonic()
        answer = svc.deliver_signed(sample_created(dataset.full_name, uuid), "msg_new")
        assert time.monotonic() - started < 1
        assert (answer.status_code, answer.json()["result"]) == (202, "accepted")
        wait_for(lambda: labeled_once(emulator, [uuid]), 10, "the new sample's label")
        svc.wait_idle()
        metrics = svc.metrics()
    assert_valid_prelabel(
        segments_client,
        uuid,
        image_size=dataset.image_size,
        category_ids=[c["id"] for c in dataset.categories],
    )
    assert metrics['prelabel_webhook_deliveries_total{result="accepted"}'] == 1
    assert metrics['prelabel_samples_total{result="labeled"}'] == 3
    assert metrics["prelabel_inference_seconds_count"] == 3


def test_every_delivery_failing_verification_gets_401_and_labels_nothing(
    emulator: Emulator,
    segments_client: SegmentsClient,
    dataset: SeededDataset,
    tmp_path: Path,
) -> None:
    with running_service(emulator, tmp_path, (dataset.full_name,)) as svc:
        uuid = add_sample(segments_client, dataset, "new.png")
        body = sample_created(dataset.full_name, uuid)
        for case in REJECTED_CASES:
            raw, headers = rejected_delivery(case, svc.secret, body)
            answer = svc.deliver(raw, headers)
            assert (case, answer.status_code) == (case, 401)
            assert answer.json()["result"] == "rejected"
        assert svc.service.idle and len(svc.service.queue) == 0
        time.sleep(0.3)  # what a wrongly accepted task would need to reach the emulator
        assert emulator.label_write_count(uuid, GT) == 0
        rejected = svc.metrics()['prelabel_webhook_deliveries_total{result="rejected"}']
        assert rejected == len(REJECTED_CASES)
        # The same body, correctly signed, is taken: the refusals above were the signatures.
        assert svc.deliver_signed(body, "msg_bad").status_code == 202
        wait_for(lambda: labeled_once(emulator, [uuid]), 10, "the label")


def test_a_duplicate_is_processed_once_also_after_a_restart(
    emulator: Emulator,
    segments_client: SegmentsClient,
    dataset: SeededDataset,
    tmp_path: Path,
) -> None:
    with running_service(emulator, tmp_path, (dataset.full_name,)) as svc:
        first = add_sample(segments_client, dataset, "first.png")
        body = sample_created(dataset.full_name, first)
        assert svc.deliver_signed(body, "msg_once").status_code == 202
        again = svc.deliver_signed(body, "msg_once")
        assert (again.status_code, again.json()["result"]) == (200, "duplicate")
        svc.wait_idle()
        assert svc.metrics()['prelabel_webhook_deliveries_total{result="duplicate"}'] == 1
    requests_before = emulator.request_count("GET", f"/samples/{first}*")
    with running_service(emulator, tmp_path, (dataset.full_name,)) as svc:
        # A new sample under the old message id: if the id were forgotten, it would be labeled.
        later = add_sample(segments_client, dataset, "later.png")
        replay = svc.deliver_signed(sample_created(dataset.full_name, later), "msg_once")
        assert (replay.status_code, replay.json()["result"]) == (200, "duplicate")
        assert svc.deliver_signed(body, "msg_once").json()["result"] == "duplicate"
        svc.wait_idle()
        time.sleep(0.3)
        assert emulator.label_write_count(later, GT) == 0
        assert emulator.request_count("GET", f"/samples/{first}*") == requests_before
        assert svc.deliver_signed(sample_created(dataset.full_name, later), "msg_new").ok
        wait_for(lambda: labeled_once(emulator, [later]), 10, "the later sample's label")
    assert labeled_once(emulator, [first, later])


def test_echoes_other_events_and_other_datasets_are_acknowledged_and_ignored(
    emulator: Emulator,
    segments_client: SegmentsClient,
    dataset: SeededDataset,
    tmp_path: Path,
) -> None:
    name = dataset.full_name
    with running_service(emulator, tmp_path, (name,)) as svc:
        uuid = add_sample(segments_client, dataset, "new.png")
        label = {"sample_uuid": uuid, "labelset": GT}
        bodies = [
            envelope("label.updated", name, {**label, "label_status": "PRELABELED"}),
            envelope("label.updated", name, {**label, "label_status": "LABELED"}),
            envelope("sample.updated", name, {"uuid": uuid}),
            envelope("dataset.updated", name, {"name": "demo"}),
            envelope("made.up", name, {"uuid": uuid}),
            envelope("sample.created", "bob/elsewhere", {"uuid": uuid}),
            envelope("label.deleted", name, {**label, "labelset": "other"}),
            '{"not": "an envelope"}',
        ]
        for index, body in enumerate(bodies):
            answer = svc.deliver_signed(body, f"msg_{index}")
            assert (answer.status_code, answer.json()["result"]) == (200, "ignored"), body
        time.sleep(0.3)
        assert svc.service.idle
        assert emulator.label_write_count(uuid, GT) == 0
        assert svc.metrics()['prelabel_webhook_deliveries_total{result="ignored"}'] == len(bodies)


def test_label_deleted_re_checks_the_sample(
    emulator: Emulator,
    segments_client: SegmentsClient,
    dataset: SeededDataset,
    tmp_path: Path,
) -> None:
    ours, theirs = dataset.sample_uuids
    # A person labeled `theirs` before serve started: the first cycle leaves it alone.
    attributes = human_attributes(segments_client, dataset.image_size)
    emulator.write_label(theirs, GT, attributes, label_status="LABELED")
    with running_service(emulator, tmp_path, (dataset.full_name,)) as svc:
        assert emulator.label_write_count(ours, GT) == 1
        assert emulator.label_write_count(theirs, GT) == 0
        for index, uuid in enumerate((ours, theirs)):
            emulator.write_label(uuid, GT, None, label_status="UNLABELED")  # a person deletes
            body = envelope("label.deleted", dataset.full_name, {"sample_uuid": uuid})
            assert svc.deliver_signed(body, f"msg_del_{index}").status_code == 202
        wait_for(lambda: labeled_once(emulator, [theirs]), 10, "a pre-label on the cleared sample")
        svc.wait_idle()
        metrics = svc.metrics()
    # Our pre-label was deleted by a person: not written again. Theirs was: now pre-labeled.
    assert emulator.label_write_count(ours, GT) == 1 and emulator.get_label(ours) is None
    assert emulator.get_label(theirs)["label_status"] == "PRELABELED"  # type: ignore[index]
    assert metrics['prelabel_samples_total{result="skipped"}'] == 1


def test_a_sample_deleted_before_its_turn_is_reported_skipped_once(
    emulator: Emulator,
    segments_client: SegmentsClient,
    dataset: SeededDataset,
    tmp_path: Path,
) -> None:
    with running_service(emulator, tmp_path, (dataset.full_name,)) as svc:
        uuid = add_sample(segments_client, dataset, "gone.png")
        segments_client.delete_sample(uuid)
        assert svc.deliver_signed(sample_created(dataset.full_name, uuid), "msg_gone").ok
        svc.wait_idle()
        metrics = svc.metrics()
    assert (uuid, GT) not in emulator.label_write_counts()
    assert metrics['prelabel_samples_total{result="skipped"}'] == 1
    # Through the recorder, as every outcome: in the batch's report, not in the state file.
    batch = tmp_path / "out" / dataset.full_name.replace("/", "__") / "webhooks"
    outcome = outcomes_by_uuid(read_report(batch / "report.json"))[uuid]
    assert (outcome["result"], outcome["reason"]) == ("skipped", "sample was deleted")
    assert state_record(tmp_path, dataset.full_name, uuid) is None


class RecordingObserver:
    """The lifecycle's observer, keeping what it is told."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[str, SampleOutcome]] = []
        self.inferences = 0

    def on_outcome(self, dataset: str, outcome: SampleOutcome) -> None:
        self.outcomes.append((dataset, outcome))

    def on_inference(self, seconds: float) -> None:
        self.inferences += 1


def test_overwrite_prelabels_holds_for_the_first_cycle_only(
    emulator: Emulator,
    segments_client: SegmentsClient,
    dataset: SeededDataset,
    tmp_path: Path,
) -> None:
    old, new = dataset.sample_uuids
    # A pre-label from an earlier model, to be redone once; and a new sample.
    attributes = human_attributes(segments_client, dataset.image_size)
    emulator.write_label(old, GT, attributes, label_status="PRELABELED")
    observer = RecordingObserver()
    state = StateStore.in_dir(tmp_path / "state")
    lifecycle = WorkerLifecycle(
        EMULATOR_API_KEY,
        make_settings(emulator.url),
        labelset=GT,
        state=state,
        load_pipeline=StandInPipeline,
        observer=observer,
        output_dir=tmp_path / "out",
        overwrite_prelabels=True,
    )
    try:
        for _ in range(3):
            lifecycle.run_cycle(dataset.full_name, lambda: False)
    finally:
        lifecycle.close()
        state.close()
    assert labeled_once(emulator, [old, new])  # not rewritten by the second and third cycles
    assert sorted((d, o.sample_uuid, o.result) for d, o in observer.outcomes) == sorted(
        (dataset.full_name, uuid, "labeled") for uuid in (old, new)
    )
    assert observer.inferences == 2


def test_a_full_queue_answers_503_with_retry_after_and_drops_nothing(
    emulator: Emulator,
    segments_client: SegmentsClient,
    dataset: SeededDataset,
    tmp_path: Path,
) -> None:
    model = GatedPipeline()
    with running_service(
        emulator, tmp_path, (dataset.full_name,), pipeline=model, queue_size=2
    ) as svc:
        model.close()
        uuids = [add_sample(segments_client, dataset, f"new_{i}.png") for i in range(4)]
        bodies = [sample_created(dataset.full_name, uuid) for uuid in uuids]
        assert svc.deliver_signed(bodies[0], "msg_0").status_code == 202
        wait_for(model.waiting.is_set, 10, "the first sample to reach the model")
        assert [svc.deliver_signed(b, f"msg_{i}").status_code for i, b in enumerate(bodies)][
            1:
        ] == [202, 202, 503]
        full = svc.deliver_signed(bodies[3], "msg_3")
        assert full.status_code == 503 and full.headers["Retry-After"] == "30"
        assert svc.metrics()["prelabel_queue_depth"] == 2
        model.open()
        wait_for(lambda: labeled_once(emulator, uuids[:3]), 10, "the accepted samples")
        svc.wait_idle()
        assert emulator.label_write_count(uuids[3], GT) == 0
        # The sender's retry of the refused message is taken: a refusal records nothing.
        retry = svc.deliver_signed(bodies[3], "msg_3")
        assert (retry.status_code, retry.json()["result"]) == (202, "accepted")
        wait_for(lambda: labeled_once(emulator, uuids), 10, "the retried sample")
        assert svc.metrics()['prelabel_webhook_deliveries_total{result="refused"}'] == 2


def test_stopping_refuses_deliveries_and_finishes_the_sample_in_progress(
    emulator: Emulator,
    segments_client: SegmentsClient,
    dataset: SeededDataset,
    tmp_path: Path,
) -> None:
    model = GatedPipeline()
    with running_service(emulator, tmp_path, (dataset.full_name,), pipeline=model) as svc:
        model.close()
        busy, late = (add_sample(segments_client, dataset, f"{n}.png") for n in ("busy", "late"))
        assert svc.deliver_signed(sample_created(dataset.full_name, busy), "msg_busy").ok
        wait_for(model.waiting.is_set, 10, "the sample to reach the model")
        svc.service.begin_drain()
        refused = svc.deliver_signed(sample_created(dataset.full_name, late), "msg_late")
        assert refused.status_code == 503 and refused.headers["Retry-After"]
        ready = svc.session.get(svc.url + "readyz")
        assert ready.status_code == 503 and ready.json()["draining"] is True
        assert svc.session.get(svc.url + "healthz").status_code == 200
        assert not svc.service.wait_drained(0.2)  # the sample in progress holds the exit
        model.open()
        assert svc.service.wait_drained(10)
    assert labeled_once(emulator, [busy])
    assert emulator.label_write_count(late, GT) == 0


def test_readyz_follows_the_api(emulator: Emulator, dataset: SeededDataset, tmp_path: Path) -> None:
    with running_service(emulator, tmp_path, (dataset.full_name,)) as svc:
        assert svc.session.get(svc.url + "readyz").json()["models_loaded"] is True
        emulator.set_faults([FaultRule(path="/user", error_rate=1.0, error_statuses=(503,))])
        wait_for(lambda: not_ready(svc), 10, "/readyz to report the API down")
        assert svc.session.get(svc.url + "healthz").status_code == 200
        emulator.clear_faults()
        wait_for(lambda: svc.session.get(svc.url + "readyz").ok, 10, "/readyz to recover")


def not_ready(svc: RunningService) -> bool:
    answer = svc.session.get(svc.url + "readyz")
    return answer.status_code == 503 and answer.json()["api_reachable"] is False


class GatedPipeline(StandInPipeline):
    """The stand-in model; once :meth:`close` is called, predictions wait for :meth:`open`
    (``waiting`` is set when one does)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        super().__init__(self.gate)
        self.waiting = threading.Event()

    def close(self) -> None:
        self.gate.clear()
        self.waiting.clear()

    def open(self) -> None:
        self.gate.set()

    def predict(self, image, taxonomy, **kwargs):  # type: ignore[no-untyped-def]
        if not self.gate.is_set():
            self.waiting.set()
        return super().predict(image, taxonomy, **kwargs)
