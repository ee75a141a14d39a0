"""The parts of ``prelabel serve`` that need no server: verification, events, dedup, queue, logs.

Signatures are made with the ``svix`` library, as Segments.ai's sender makes them; every case of
``shared/segments-api.md`` 11.5 that must be refused is checked against the verifier here, and
again over HTTP (with nothing labeled) in ``tests/test_serve.py``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from prelabel.cli._logging import CONTEXT_FIELDS, JsonFormatter
from prelabel.errors import ConfigError
from prelabel.serve.dedup import DeliveryLog
from prelabel.serve.webhooks import (
    Event,
    Ignored,
    Rejected,
    SampleTask,
    SignatureVerifier,
    check_secret,
    decide,
    parse_event,
)
from prelabel.serve.work_queue import WorkQueue
from tests.serve_helpers import (
    REJECTED_CASES,
    envelope,
    new_secret,
    rejected_delivery,
    signed,
)

DATASET = "jane/flowers"


def test_a_delivery_signed_by_svix_is_authentic_with_either_header_prefix() -> None:
    secret = new_secret()
    verifier = SignatureVerifier(secret)
    body = envelope("sample.created", DATASET, {"uuid": "s1"})
    assert verifier.verify(body.encode(), signed(secret, body, "msg_a")) == "msg_a"
    assert (
        verifier.verify(body.encode(), signed(secret, body, "msg_b", prefix="webhook")) == "msg_b"
    )
    upper = {k.upper(): v for k, v in signed(secret, body, "msg_c").items()}
    assert verifier.verify(body.encode(), upper) == "msg_c"
    four_minutes_old = datetime.now(UTC) - timedelta(minutes=4)
    assert verifier.verify(body.encode(), signed(secret, body, "msg_d", at=four_minutes_old))


def test_during_secret_rotation_a_second_valid_signature_is_enough() -> None:
    secret = new_secret()
    body = envelope("sample.created", DATASET, {"uuid": "s1"})
    headers = signed(secret, body, "msg_r")
    old = signed(new_secret(), body, "msg_r")["svix-signature"]
    headers["svix-signature"] = f"{old} {headers['svix-signature']}"
    assert SignatureVerifier(secret).verify(body.encode(), headers) == "msg_r"


@pytest.mark.parametrize("case", REJECTED_CASES)
def test_every_failure_of_spec_11_5_is_a_rejection(case: str) -> None:
    secret = new_secret()
    body, headers = rejected_delivery(case, secret, envelope("sample.created", DATASET, {}))
    with pytest.raises(Rejected):
        SignatureVerifier(secret).verify(body, headers)


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_!!!", "mysecret?"])
def test_a_secret_that_cannot_be_a_svix_secret_is_refused_at_start(secret: str) -> None:
    with pytest.raises(ConfigError, match="not a Svix signing secret"):
        check_secret(secret)


def test_a_secret_without_the_prefix_is_accepted_as_svix_does() -> None:
    secret = new_secret()
    bare = secret.removeprefix("whsec_")
    body = envelope("sample.created", DATASET, {"uuid": "s1"})
    assert SignatureVerifier(bare).verify(body.encode(), signed(secret, body, "msg_p"))


def event(event_type: str, **obj: str) -> Event | None:
    return parse_event(envelope(event_type, DATASET, obj).encode())


@pytest.mark.parametrize(
    ("parsed", "expected"),
    [
        (event("sample.created", uuid="s1"), SampleTask(DATASET, "s1", "sample.created", "m")),
        (
            event("label.deleted", sample_uuid="s1", labelset="ground-truth"),
            SampleTask(DATASET, "s1", "label.deleted", "m"),
        ),
        (event("label.deleted", sample_uuid="s1"), SampleTask(DATASET, "s1", "label.deleted", "m")),
        (event("label.deleted", sample_uuid="s1", labelset="other"), Ignored),
        (event("label.updated", sample_uuid="s1", label_status="PRELABELED"), Ignored),
        (event("label.updated", sample_uuid="s1", label_status="LABELED"), Ignored),
        (event("sample.updated", uuid="s1"), Ignored),
        (event("release.created", name="v1"), Ignored),
        (event("sample.created"), Ignored),
        (parse_event(envelope("sample.created", "bob/other", {"uuid": "s1"}).encode()), Ignored),
        (parse_event(b"[1, 2]"), Ignored),
        (parse_event(b"not json"), Ignored),
    ],
    ids=[
        "created",
        "deleted",
        "deleted without labelset",
        "deleted in another labelset",
        "own echo",
        "person's update",
        "other event",
        "release",
        "no uuid",
        "other dataset",
        "not an object",
        "not json",
    ],
)
def test_decide(parsed: Event | None, expected: object) -> None:
    result = decide(parsed, "m", datasets={DATASET}, labelset="ground-truth")
    if expected is Ignored:
        assert isinstance(result, Ignored) and result.reason
    else:
        assert result == expected


def test_the_echo_of_our_write_is_named_as_such() -> None:
    echo = event("label.updated", sample_uuid="s1", label_status="PRELABELED")
    result = decide(echo, "m", datasets={DATASET}, labelset="ground-truth")
    assert isinstance(result, Ignored) and "echo" in result.reason


def test_a_message_id_counts_once_within_48_hours_and_again_after(tmp_path: Path) -> None:
    now = [1_000_000.0]
    log = DeliveryLog(tmp_path / "state.sqlite", clock=lambda: now[0])
    assert not log.seen("msg_1")
    assert log.record("msg_1", "sample.created")
    assert log.seen("msg_1")
    assert not log.record("msg_1", "sample.created")
    now[0] += 47 * 3600
    assert log.seen("msg_1") and not log.record("msg_1", "sample.created")
    now[0] += 2 * 3600  # 49 h after the first delivery (the record above did not renew it)
    assert not log.seen("msg_1")
    assert log.record("msg_1", "sample.created")
    log.record("msg_2", None)
    now[0] += 49 * 3600
    assert log.prune() == 2 and len(log) == 0
    log.close()


def test_message_ids_survive_a_restart_beside_the_resume_state(tmp_path: Path) -> None:
    from prelabel.state import StateStore

    state = StateStore.in_dir(tmp_path)
    log = DeliveryLog(state.path)
    log.record("msg_1", "sample.created")
    log.close()
    state.close()
    reopened = DeliveryLog(tmp_path / "state.sqlite")
    assert reopened.seen("msg_1")
    reopened.close()
    tables = sqlite3.connect(tmp_path / "state.sqlite").execute(
        "SELECT name FROM sqlite_master WHERE type='table'"
    )
    assert {"samples", "leases", "webhook_messages"} <= {row[0] for row in tables}


def test_two_threads_recording_one_id_record_it_once(tmp_path: Path) -> None:
    logs = [DeliveryLog(tmp_path / "state.sqlite") for _ in range(2)]  # two connections
    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def race(index: int) -> None:
        barrier.wait()
        wins.append(logs[index % 2].record("msg_race", "sample.created"))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == [False] * 7 + [True]
    for log in logs:
        log.close()


def task(uuid: str, dataset: str = DATASET) -> SampleTask:
    return SampleTask(dataset, uuid, "sample.created", f"msg_{uuid}")


def test_the_queue_refuses_when_full_and_merges_tasks_of_one_sample() -> None:
    queue = WorkQueue(capacity=2)
    assert queue.offer(task("a")) and queue.offer(task("b"))
    assert not queue.has_room(task("c")) and not queue.offer(task("c"))
    assert queue.has_room(task("a")) and queue.offer(task("a"))  # merged with the waiting one
    assert len(queue) == 2 and queue.unfinished == 2
    assert queue.take(timeout=0) == task("a")
    assert queue.offer(task("c"))
    assert [queue.take(0), queue.take(0), queue.take(0)] == [task("b"), task("c"), None]
    queue.task_done(3)
    assert queue.unfinished == 0


def test_take_if_keeps_another_datasets_task_at_the_head() -> None:
    queue = WorkQueue(capacity=5)
    for item in (task("a"), task("b", "bob/other"), task("c")):
        queue.offer(item)
    assert queue.take_if(DATASET) == task("a")
    assert queue.take_if(DATASET) is None
    assert queue.take(0) == task("b", "bob/other")
    assert queue.take_if(DATASET) == task("c")


def test_take_waits_for_a_task_from_another_thread() -> None:
    queue = WorkQueue(capacity=1)
    timer = threading.Timer(0.05, lambda: queue.offer(task("late")))
    timer.start()
    assert queue.take(timeout=5) == task("late")
    timer.join()


def test_json_log_lines_carry_the_context_and_never_a_secret() -> None:
    key, secret = "key-1234567890", new_secret()
    formatter = JsonFormatter([key, secret])
    record = logging.LogRecord("prelabel.x", logging.INFO, __file__, 1, "using %s", (key,), None)
    record.dataset, record.sample, record.outcome = DATASET, "s1", "labeled"
    line = json.loads(formatter.format(record))
    assert set(line) >= {"time", "level", "logger", "message", *CONTEXT_FIELDS}
    assert line["message"] == "using ***" and line["dataset"] == DATASET
    assert line["outcome"] == "labeled" and line["reason"] is None
    assert line["time"].endswith("+00:00")
    try:
        raise RuntimeError(f"failed with {secret}")
    except RuntimeError:
        import sys

        error = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    text = formatter.format(error)
    assert secret not in text and "***" in json.loads(text)["exception"]


#: The per-sample lifecycle and what it reads and writes; within prelabel.serve only the adapter
#: may know it (the seam). The rest of serve uses run's values (outcome, report) and sync's loop.
LIFECYCLE_MODULES = {
    "prelabel.run.dataset",
    "prelabel.run.job",
    "prelabel.run.lifecycle",
    "prelabel.run.models",
    "prelabel.run.overlapped",
    "prelabel.run.policy",
    "prelabel.run.ray_engine",
    "prelabel.run.recorder",
    "prelabel.run.steps",
    "prelabel.segments.client",
    "prelabel.segments.dataset",
    "prelabel.segments.samples",
    "prelabel.segments.upload",
    "prelabel.state",
}


def test_only_the_adapter_knows_the_lifecycle() -> None:
    import ast

    package = Path(__file__).resolve().parents[1] / "prelabel" / "serve"
    knows = {}
    for path in sorted(package.glob("*.py")):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        knows[path.name] = sorted(imported & LIFECYCLE_MODULES)
    assert knows.pop("adapter.py")  # the one that does
    assert all(not modules for modules in knows.values()), knows
