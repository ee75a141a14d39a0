"""StateStore: the SQLite resume records, read back through a fresh connection."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from prelabel.state import (
    FAILED,
    LABELED,
    SKIPPED,
    UPLOADED,
    StateStore,
    default_state_dir,
)

DS, LS = "jane/demo", "ground-truth"
ATTRIBUTES = {
    "format_version": "0.1",
    "annotations": [{"id": 1, "category_id": 3}],
    "segmentation_bitmap": {"url": "http://h/s3/assets/jane/a.png"},
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = StateStore.in_dir(tmp_path / "state")
    yield s
    s.close()


def _reopen(store: StateStore) -> StateStore:
    """A second connection on the same file: only committed data is visible through it."""
    return StateStore(store.path)


def test_uploaded_record_keeps_asset_attributes_and_score(store: StateStore) -> None:
    store.mark_uploaded(
        DS, LS, "u1", "a.png", asset_url="http://h/a.png", attributes=ATTRIBUTES, score=0.75
    )

    other = _reopen(store)
    record = other.get(DS, LS, "u1")
    other.close()

    assert record is not None
    assert (record.stage, record.sample_name, record.asset_url) == (
        UPLOADED,
        "a.png",
        "http://h/a.png",
    )
    assert record.attributes == ATTRIBUTES
    assert record.score == 0.75
    assert record.reason is None and record.attempts == 0


def test_labeled_after_uploaded_keeps_the_asset(store: StateStore) -> None:
    store.mark_uploaded(
        DS, LS, "u1", "a.png", asset_url="http://h/a.png", attributes=ATTRIBUTES, score=0.5
    )
    store.mark_labeled(DS, LS, "u1", "a.png")

    record = store.get(DS, LS, "u1")

    assert record is not None
    assert record.stage == LABELED
    assert record.asset_url == "http://h/a.png" and record.attributes == ATTRIBUTES


def test_a_failure_after_upload_keeps_the_upload_usable_and_counts_attempts(
    store: StateStore,
) -> None:
    store.mark_uploaded(
        DS, LS, "u1", "a.png", asset_url="http://h/a.png", attributes=ATTRIBUTES, score=0.5
    )
    store.mark_failed(DS, LS, "u1", "a.png", "server error 503")
    store.mark_failed(DS, LS, "u1", "a.png", "server error 502")

    record = store.get(DS, LS, "u1")

    assert record is not None
    assert record.stage == UPLOADED
    assert record.asset_url == "http://h/a.png"
    assert (record.reason, record.attempts) == ("server error 502", 2)


def test_failed_and_skipped_records(store: StateStore) -> None:
    store.mark_failed(DS, LS, "u1", "a.png", "not a recognised image format")
    store.mark_skipped(DS, LS, "u2", "b.png", "label is LABELED (a person has worked on it)")

    failed, skipped = store.get(DS, LS, "u1"), store.get(DS, LS, "u2")

    assert failed is not None and skipped is not None
    assert (failed.stage, failed.attempts, failed.asset_url) == (FAILED, 1, None)
    assert (skipped.stage, skipped.reason) == (
        SKIPPED,
        "label is LABELED (a person has worked on it)",
    )


def test_records_are_separate_per_dataset_and_labelset(store: StateStore) -> None:
    store.mark_labeled(DS, LS, "u1", "a.png")
    store.mark_failed(DS, "predictions", "u1", "a.png", "boom")
    store.mark_skipped("jane/other", LS, "u1", "a.png", "why")

    assert store.counts(DS, LS) == {LABELED: 1}
    assert store.counts(DS, "predictions") == {FAILED: 1}
    assert store.counts("jane/other", LS) == {SKIPPED: 1}
    assert store.get("jane/none", LS, "u1") is None


def test_concurrent_writers_lose_nothing(store: StateStore) -> None:
    def work(offset: int) -> None:
        for i in range(50):
            store.mark_labeled(DS, LS, f"u{offset + i}", "x.png")

    threads = [threading.Thread(target=work, args=(k * 50,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    other = _reopen(store)
    assert other.counts(DS, LS) == {LABELED: 200}
    other.close()


def test_a_record_committed_before_kill_9_survives(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from prelabel.state import StateStore\n"
        "s = StateStore(Path(sys.argv[1]))\n"
        "s.mark_uploaded('jane/demo', 'ground-truth', 'u1', 'a.png', asset_url='http://h/a.png',"
        " attributes={'annotations': []}, score=0.5)\n"
        "s.mark_labeled('jane/demo', 'ground-truth', 'u2', 'b.png')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        cwd=Path(__file__).resolve().parents[1],
        check=False,
    )

    assert result.returncode == -signal.SIGKILL
    store = StateStore(path)
    uploaded, labeled = store.get(DS, LS, "u1"), store.get(DS, LS, "u2")
    store.close()
    assert uploaded is not None and uploaded.stage == UPLOADED
    assert uploaded.asset_url == "http://h/a.png"
    assert labeled is not None and labeled.stage == LABELED


def test_default_state_dir_follows_xdg_state_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / "prelabel"

    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_state_dir() == Path.home() / ".local" / "state" / "prelabel"
