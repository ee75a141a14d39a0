"""The sync loop's parts without a server: intervals, backoff, stopping, and the sample leases.

``sync_loop`` is driven by a fake cycle and policies with tiny waits (no patching); the leases
are exercised on real state files, including two :class:`StateStore` objects on one file racing
from threads, as two ``prelabel sync`` processes sharing a ``--state-dir`` would.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from prelabel.errors import (
    AuthError,
    ConfigError,
    ModelLoadError,
    NotFoundRemoteError,
    PrelabelError,
    RemoteError,
    TransientRemoteError,
)
from prelabel.run.policy import SameModelError
from prelabel.run.report import RunSummary
from prelabel.run.sync import StopSignal, SyncPolicy, parse_interval, sync_loop
from prelabel.state import StateStore, owner_is_dead

DS, GT = "jane/demo", "ground-truth"

# parse_interval ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("45", 45.0),
        ("0.5s", 0.5),
        ("1.5m", 90.0),
        ("10sec", 10.0),
        (" 2 min ", 120.0),
        ("1HR", 3600.0),
        ("3H", 10800.0),
    ],
)
def test_parse_interval_accepts_seconds_minutes_and_hours(text: str, seconds: float) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize(
    "text", ["", " ", "0", "0s", "0.0m", "-5s", "10d", "m", "ten minutes", "1e3", ".5s", "5 m s"]
)
def test_parse_interval_refuses_anything_else_with_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="positive duration"):
        parse_interval(text)


# SyncPolicy --------------------------------------------------------------------------------------


def test_failure_delays_double_from_the_initial_wait_up_to_the_cap_with_bounded_jitter() -> None:
    policy = SyncPolicy(interval_s=600.0, backoff_initial_s=5.0, jitter=0.1)
    rng = random.Random(1)
    for failures in range(1, 40):
        base = min(600.0, 5.0 * 2 ** (failures - 1))
        for _ in range(50):
            delay = policy.delay_after_failure(failures, rng)
            assert base <= delay <= base * 1.2, (failures, delay)
    # The cap is the interval, or 5 min when the interval is shorter.
    short = SyncPolicy(interval_s=1.0)
    assert 300.0 <= short.delay_after_failure(30, rng) <= 360.0
    assert 5.0 <= short.delay_after_failure(1, rng) <= 6.0


def test_failure_delays_grow_until_capped() -> None:
    policy = SyncPolicy(interval_s=60.0, backoff_initial_s=1.0, jitter=0.0)
    rng = random.Random(0)
    delays = [policy.delay_after_failure(n, rng) for n in range(1, 12)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0]


def test_a_worker_failing_for_days_keeps_a_capped_delay() -> None:
    """After 1024 failures ``2 ** n`` no longer fits a float; the delay must still be the cap."""
    policy = SyncPolicy(interval_s=600.0, jitter=0.0)
    for failures in (1024, 1025, 5000, 10**6):
        assert policy.delay_after_failure(failures, random.Random(0)) == 600.0


def test_success_delays_jitter_around_the_interval_and_are_reproducible() -> None:
    policy = SyncPolicy(interval_s=100.0, jitter=0.1)
    delays = [policy.delay_after_success(random.Random(7)) for _ in range(3)]
    assert len(set(delays)) == 1  # same seed, same delay
    rng = random.Random(3)
    spread = [policy.delay_after_success(rng) for _ in range(2000)]
    assert all(90.0 <= d <= 110.0 for d in spread)
    assert min(spread) < 95.0 and max(spread) > 105.0  # jittered, not constant
    failures = [policy.delay_after_failure(1, rng) for _ in range(2000)]
    assert min(failures) < 5.2 and max(failures) > 5.8  # the failure jitter too


def test_without_jitter_the_delays_are_exact() -> None:
    policy = SyncPolicy(interval_s=42.0, backoff_initial_s=3.0, jitter=0.0)
    rng = random.Random(0)
    assert policy.delay_after_success(rng) == 42.0
    assert policy.delay_after_failure(2, rng) == 6.0


# sync_loop ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordingPolicy(SyncPolicy):
    """A real policy whose waits are recorded and made tiny."""

    calls: list[tuple[str, int]] = field(default_factory=list, compare=False)

    def delay_after_failure(self, failures: int, rng: random.Random) -> float:
        self.calls.append(("failure", failures))
        return 0.001

    def delay_after_success(self, rng: random.Random) -> float:
        self.calls.append(("success", 0))
        return 0.001


class FakeCycle:
    """Plays a script of results (a summary or an exception), then stops the loop."""

    def __init__(self, stop: StopSignal, script: list[RunSummary | Exception]) -> None:
        self.stop = stop
        self.script = list(script)
        self.calls = 0
        self.saw_stop: list[bool] = []

    def __call__(self, should_stop: Callable[[], bool]) -> RunSummary:
        self.calls += 1
        self.saw_stop.append(should_stop())
        step = self.script.pop(0)
        if not self.script:
            self.stop.event.set()
        if isinstance(step, Exception):
            raise step
        return step


def summary(**counts: int) -> RunSummary:
    result = RunSummary()
    for name, count in counts.items():
        result.counts[name] = count
    return result


def test_the_loop_runs_cycles_until_the_stop_signal_and_returns_the_last_summary() -> None:
    stop = StopSignal()
    summaries = [summary(labeled=3), summary(), summary(labeled=1)]
    cycle = FakeCycle(stop, list(summaries))
    seen: list[RunSummary] = []
    policy = RecordingPolicy(interval_s=1.0)

    last = sync_loop(cycle, policy, stop, on_summary=seen.append)

    assert cycle.calls == 3
    assert last is summaries[-1]
    assert seen == summaries
    assert cycle.saw_stop == [False, False, False]  # should_stop is the signal, not yet set
    assert policy.calls == [("success", 0)] * 3


def test_the_cycle_polls_the_stop_signal_itself() -> None:
    stop = StopSignal()
    polled: list[bool] = []

    def cycle(should_stop: Callable[[], bool]) -> RunSummary:
        polled.append(should_stop())
        stop.event.set()  # as SIGTERM would, mid-cycle
        polled.append(should_stop())
        return summary(labeled=1)

    last = sync_loop(cycle, RecordingPolicy(interval_s=1.0), stop)

    assert polled == [False, True]
    assert last is not None and last.counts["labeled"] == 1


def test_a_stop_before_the_first_cycle_runs_no_cycle() -> None:
    stop = StopSignal()
    stop.event.set()
    cycle = FakeCycle(stop, [summary()])

    assert sync_loop(cycle, RecordingPolicy(interval_s=1.0), stop) is None
    assert cycle.calls == 0


def test_a_stop_during_the_wait_between_cycles_ends_the_loop_at_once() -> None:
    stop = StopSignal()
    calls: list[float] = []

    def cycle(_should_stop: Callable[[], bool]) -> RunSummary:
        calls.append(time.monotonic())
        threading.Timer(0.1, stop.event.set).start()
        return summary()

    started = time.monotonic()
    sync_loop(cycle, SyncPolicy(interval_s=60.0), stop)

    assert len(calls) == 1
    assert time.monotonic() - started < 10


def test_remote_errors_are_retried_with_backoff_and_the_count_resets_after_a_success() -> None:
    stop = StopSignal()
    script: list[RunSummary | Exception] = [
        TransientRemoteError("502"),
        RemoteError("odd answer"),
        summary(labeled=2),
        TransientRemoteError("503"),
        summary(labeled=1),
    ]
    cycle = FakeCycle(stop, script)
    seen: list[RunSummary] = []
    policy = RecordingPolicy(interval_s=1.0)

    last = sync_loop(cycle, policy, stop, on_summary=seen.append)

    assert cycle.calls == 5
    assert policy.calls == [
        ("failure", 1),
        ("failure", 2),
        ("success", 0),
        ("failure", 1),
        ("success", 0),
    ]
    assert [s.counts["labeled"] for s in seen] == [2, 1]  # failed cycles report nothing
    assert last is not None and last.counts["labeled"] == 1


def test_the_backoff_really_waits() -> None:
    """With the real policy: the retry after a failure waits at least the backoff."""
    stop = StopSignal()
    times: list[float] = []
    script: list[RunSummary | Exception] = [
        TransientRemoteError("down"),
        TransientRemoteError("down"),
        summary(),
    ]

    def cycle(should_stop: Callable[[], bool]) -> RunSummary:
        times.append(time.monotonic())
        step = script.pop(0)
        if not script:
            stop.event.set()
        if isinstance(step, Exception):
            raise step
        return step

    policy = SyncPolicy(interval_s=0.01, backoff_initial_s=0.05, jitter=0.1)
    sync_loop(cycle, policy, stop, rng=random.Random(0))

    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 2
    assert gaps[0] >= 0.05 * 0.95 and gaps[1] >= 0.1 * 0.95
    assert gaps[1] > gaps[0]


@pytest.mark.parametrize(
    "error",
    [
        AuthError("the API key was refused"),
        ConfigError("no such labelset"),
        NotFoundRemoteError("dataset jane/nope not found"),
        ModelLoadError("no weights"),
        SameModelError("the first 3 samples all failed in the model"),
    ],
    ids=lambda e: type(e).__name__,
)
@pytest.mark.parametrize("once", [False, True], ids=["forever", "once"])
def test_errors_that_retrying_cannot_fix_end_the_loop(error: PrelabelError, once: bool) -> None:
    stop = StopSignal()
    cycle = FakeCycle(stop, [error, summary()])
    policy = RecordingPolicy(interval_s=1.0, once=once)

    with pytest.raises(type(error)):
        sync_loop(cycle, policy, stop)

    assert cycle.calls == 1
    assert policy.calls == []


def test_once_runs_one_cycle() -> None:
    stop = StopSignal()
    cycle = FakeCycle(stop, [summary(labeled=1), summary(labeled=2)])
    seen: list[RunSummary] = []
    policy = RecordingPolicy(interval_s=1.0, once=True)

    last = sync_loop(cycle, policy, stop, on_summary=seen.append)

    assert cycle.calls == 1
    assert last is not None and last.counts["labeled"] == 1 and seen == [last]
    assert not stop.is_set()  # it ended because of once, not because of the script


def test_once_raises_a_failing_cycle_instead_of_retrying() -> None:
    stop = StopSignal()
    cycle = FakeCycle(stop, [TransientRemoteError("server error 500"), summary()])
    policy = RecordingPolicy(interval_s=1.0, once=True)

    with pytest.raises(TransientRemoteError, match="500"):
        sync_loop(cycle, policy, stop)

    assert cycle.calls == 1 and policy.calls == []


# StopSignal --------------------------------------------------------------------------------------


@pytest.fixture
def restored_signal_handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.usefixtures("restored_signal_handlers")
def test_sigterm_and_sigint_set_the_stop_signal_instead_of_killing(sig: signal.Signals) -> None:
    stop = StopSignal()
    stop.install()
    assert not stop.is_set()

    os.kill(os.getpid(), sig)
    deadline = time.monotonic() + 5
    while not stop.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)  # the handler runs on the main thread between bytecodes

    assert stop.is_set()
    os.kill(os.getpid(), sig)  # a second signal changes nothing (and does not raise)
    time.sleep(0.05)
    assert stop.is_set()


# Leases ------------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    state = StateStore.in_dir(tmp_path)
    yield state
    state.close()


def test_claim_is_exclusive_until_released(store: StateStore) -> None:
    assert store.claim(DS, GT, "s1", "a", 60) is None
    assert store.claim(DS, GT, "s1", "b", 60) == "a"
    assert store.claim(DS, GT, "s1", "a", 60) is None  # the holder may renew
    store.release(DS, GT, "s1", "b")  # not b's: nothing happens
    assert store.claim(DS, GT, "s1", "b", 60) == "a"
    store.release(DS, GT, "s1", "a")
    assert store.claim(DS, GT, "s1", "b", 60) is None
    assert store.claim(DS, GT, "s1", "a", 60) == "b"


def test_leases_are_per_dataset_labelset_and_sample(store: StateStore) -> None:
    assert store.claim(DS, GT, "s1", "a", 60) is None
    assert store.claim(DS, "review", "s1", "b", 60) is None
    assert store.claim("jane/other", GT, "s1", "b", 60) is None
    assert store.claim(DS, GT, "s2", "b", 60) is None
    assert store.claim(DS, GT, "s1", "b", 60) == "a"


def test_an_expired_lease_can_be_claimed_by_another_worker(store: StateStore) -> None:
    assert store.claim(DS, GT, "s1", "a", 0.05) is None
    assert store.claim(DS, GT, "s1", "b", 60) == "a"
    time.sleep(0.1)
    assert store.claim(DS, GT, "s1", "b", 60) is None
    assert store.claim(DS, GT, "s1", "a", 60) == "b"  # a lost it for good


def test_take_over_moves_a_lease_only_from_the_named_owner(store: StateStore) -> None:
    assert store.claim(DS, GT, "s1", "dead", 60) is None
    assert store.take_over(DS, GT, "s1", "someone-else", "b", 60) is False
    assert store.claim(DS, GT, "s1", "b", 60) == "dead"
    assert store.take_over(DS, GT, "s1", "dead", "b", 60) is True
    assert store.claim(DS, GT, "s1", "c", 60) == "b"
    # A second taker that also saw "dead" loses: the lease changed hands meanwhile.
    assert store.take_over(DS, GT, "s1", "dead", "c", 60) is False
    assert store.claim(DS, GT, "s1", "c", 60) == "b"
    # Nothing to take over where there is no lease.
    assert store.take_over(DS, GT, "s9", "dead", "c", 60) is False


def test_release_all_frees_only_that_workers_leases(store: StateStore) -> None:
    for sample in ("s1", "s2", "s3"):
        assert store.claim(DS, GT, sample, "a", 60) is None
    assert store.claim(DS, GT, "s4", "b", 60) is None

    store.release_all("a")

    for sample in ("s1", "s2", "s3"):
        assert store.claim(DS, GT, sample, "c", 60) is None
    assert store.claim(DS, GT, "s4", "c", 60) == "b"


def test_leases_do_not_touch_the_resume_records(store: StateStore) -> None:
    store.mark_labeled(DS, GT, "s1", "a.png")
    assert store.claim(DS, GT, "s1", "a", 60) is None
    store.release_all("a")
    record = store.get(DS, GT, "s1")
    assert record is not None and record.stage == "labeled"
    assert store.counts(DS, GT) == {"labeled": 1}


def test_two_stores_on_one_file_racing_from_threads_claim_each_sample_once(
    tmp_path: Path,
) -> None:
    """Two processes sharing a --state-dir, four threads each, all going for the same samples."""
    samples = [f"s{i:03d}" for i in range(150)]
    stores = [StateStore.in_dir(tmp_path), StateStore.in_dir(tmp_path)]
    owners = [(stores[i // 4], f"worker{i // 4}:thread{i % 4}") for i in range(8)]
    barrier = threading.Barrier(len(owners))
    wins: dict[str, list[str]] = {owner: [] for _, owner in owners}
    errors: list[BaseException] = []

    def race(state: StateStore, owner: str, seed: int) -> None:
        order = samples[:]
        random.Random(seed).shuffle(order[len(order) // 2 :])  # same start, then scattered
        try:
            barrier.wait()
            for sample in order:
                if state.claim(DS, GT, sample, owner, 60) is None:
                    wins[owner].append(sample)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=race, args=(state, owner, seed))
        for seed, (state, owner) in enumerate(owners)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for state in stores:
        state.close()

    assert errors == []
    claimed = [sample for won in wins.values() for sample in won]
    assert sorted(claimed) == samples  # every sample claimed, none twice
    # And the file agrees: each sample is held by the thread that believes it won it.
    check = StateStore.in_dir(tmp_path)
    try:
        for owner, won in wins.items():
            for sample in won:
                assert check.claim(DS, GT, sample, "checker", 60) == owner
    finally:
        check.close()


# owner_is_dead -----------------------------------------------------------------------------------


def test_owner_is_dead_only_for_a_finished_process_on_this_machine() -> None:
    host = socket.gethostname()
    # The pid of a process that has exited and been reaped (reuse within a test is unlikely).
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()

    assert owner_is_dead(f"{host}:{child.pid}:abc123") is True
    assert owner_is_dead(f"{host}:{os.getpid()}:abc123") is False  # alive
    assert owner_is_dead(f"other-{host}:{child.pid}:abc123") is False  # cannot tell: wait
    assert owner_is_dead(f"{host}:not-a-pid:abc") is False
    assert owner_is_dead("checker") is False
