"""Resume records: how far each sample got, per dataset and labelset, in one SQLite file.

Table ``samples`` has one row per ``(dataset, labelset, sample_uuid)`` with ``stage``:

- ``uploaded``: the bitmap asset is on the server (``asset_url``) and the label attributes to
  write with it are stored (``attributes`` JSON, ``score``), but the label may not be written;
- ``labeled``: the PRELABELED label was written;
- ``skipped`` / ``failed``: with ``reason``; both are retried by the next run (a skip's cause,
  e.g. a human label, is re-read from the server then);
- ``parked``: failed for reasons of its own (``attempts`` counts those, not server trouble) as
  often as the failure policy allows (``worker.max_attempts``, :func:`prelabel.run.policy.parks`);
  left alone until a run is asked to retry failed samples.

Table ``frames`` holds, for an image sequence, each frame whose bitmap is already uploaded
(its ``label``: asset URL, annotations, score and the frame image it was predicted from, JSON),
keyed by frame index: a sequence's frames are uploaded one by one as they are predicted, and a run
killed half-way reuses them instead of uploading again. They are dropped once the label is
written.

Table ``leases`` keeps two workers sharing this file (two ``prelabel sync`` processes on one
machine) off the same sample: a worker claims a sample before working on it, and the claim
expires after a time-to-live so a killed worker's samples are taken up again.

Each transition is one committed transaction (WAL mode), so a ``kill -9`` at any instant leaves
either the old or the new record. The server remains the source of truth: the worker re-reads a
sample's label before writing, and a deleted state file only costs recomputation.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    dataset TEXT NOT NULL,
    labelset TEXT NOT NULL,
    sample_uuid TEXT NOT NULL,
    sample_name TEXT NOT NULL,
    stage TEXT NOT NULL,
    asset_url TEXT,
    attributes TEXT,
    score REAL,
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    PRIMARY KEY (dataset, labelset, sample_uuid)
);
CREATE TABLE IF NOT EXISTS frames (
    dataset TEXT NOT NULL,
    labelset TEXT NOT NULL,
    sample_uuid TEXT NOT NULL,
    frame_index INTEGER NOT NULL,
    label TEXT NOT NULL,
    PRIMARY KEY (dataset, labelset, sample_uuid, frame_index)
);
CREATE TABLE IF NOT EXISTS leases (
    dataset TEXT NOT NULL,
    labelset TEXT NOT NULL,
    sample_uuid TEXT NOT NULL,
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (dataset, labelset, sample_uuid)
);
"""

#: The columns of a :class:`SampleRecord`, in its field order.
_RECORD_COLUMNS = "sample_uuid, sample_name, stage, asset_url, attributes, score, reason, attempts"

UPLOADED = "uploaded"
LABELED = "labeled"
SKIPPED = "skipped"
FAILED = "failed"
#: Failed ``worker.max_attempts`` times (not counting server trouble): left alone until a run
#: is asked to retry failed samples.
PARKED = "parked"


@dataclass(frozen=True)
class SampleRecord:
    sample_uuid: str
    sample_name: str
    stage: str
    asset_url: str | None
    attributes: dict[str, Any] | None
    score: float | None
    reason: str | None
    attempts: int


def _record(row: tuple[Any, ...]) -> SampleRecord:
    return SampleRecord(
        sample_uuid=row[0],
        sample_name=row[1],
        stage=row[2],
        asset_url=row[3],
        attributes=json.loads(row[4]) if row[4] else None,
        score=row[5],
        reason=row[6],
        attempts=row[7],
    )


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/prelabel`` (``~/.local/state/prelabel``): per user, survives reboots."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "prelabel"


class StateStore:
    """Thread-safe access to the state file; one connection guarded by a lock."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    @classmethod
    def in_dir(cls, state_dir: Path | None) -> StateStore:
        """The store of ``state_dir`` (``None``: :func:`default_state_dir`)."""
        return cls((state_dir or default_state_dir()) / "state.sqlite")

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def get(self, dataset: str, labelset: str, sample_uuid: str) -> SampleRecord | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_RECORD_COLUMNS} FROM samples"
                " WHERE dataset=? AND labelset=? AND sample_uuid=?",
                (dataset, labelset, sample_uuid),
            ).fetchone()
        return None if row is None else _record(row)

    def mark_uploaded(
        self,
        dataset: str,
        labelset: str,
        sample_uuid: str,
        sample_name: str,
        *,
        asset_url: str,
        attributes: dict[str, Any],
        score: float,
    ) -> None:
        self._upsert(
            dataset,
            labelset,
            sample_uuid,
            sample_name,
            stage=UPLOADED,
            asset_url=asset_url,
            attributes=json.dumps(attributes),
            score=score,
            reason=None,
        )

    def mark_labeled(self, dataset: str, labelset: str, sample_uuid: str, sample_name: str) -> None:
        self._upsert(dataset, labelset, sample_uuid, sample_name, stage=LABELED, reason=None)
        with self._lock:
            self._db.execute(
                "DELETE FROM frames WHERE dataset=? AND labelset=? AND sample_uuid=?",
                (dataset, labelset, sample_uuid),
            )

    def mark_frame_uploaded(
        self,
        dataset: str,
        labelset: str,
        sample_uuid: str,
        frame_index: int,
        label: dict[str, Any],
    ) -> None:
        """Record one uploaded frame bitmap of a sequence (``label``: JSON-able)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO frames (dataset, labelset, sample_uuid, frame_index,"
                " label) VALUES (?, ?, ?, ?, ?)",
                (dataset, labelset, sample_uuid, frame_index, json.dumps(label)),
            )

    def uploaded_frames(
        self, dataset: str, labelset: str, sample_uuid: str
    ) -> dict[int, dict[str, Any]]:
        """``frame index -> label`` of the frames recorded for a sequence."""
        with self._lock:
            rows = self._db.execute(
                "SELECT frame_index, label FROM frames"
                " WHERE dataset=? AND labelset=? AND sample_uuid=?",
                (dataset, labelset, sample_uuid),
            ).fetchall()
        return {int(i): json.loads(label) for i, label in rows}

    def mark_skipped(
        self, dataset: str, labelset: str, sample_uuid: str, sample_name: str, reason: str
    ) -> None:
        self._upsert(dataset, labelset, sample_uuid, sample_name, stage=SKIPPED, reason=reason)

    def mark_failed(
        self,
        dataset: str,
        labelset: str,
        sample_uuid: str,
        sample_name: str,
        reason: str,
        *,
        transient: bool = False,
        parks: Callable[[int], bool] = lambda _attempts: False,
    ) -> str:
        """Record a failure and return the sample's stage after it.

        The store only counts: ``attempts`` counts the failures that are not ``transient``
        (server trouble says nothing about the sample), and ``parks(attempts)`` (the failure
        policy's rule, :func:`prelabel.run.policy.parks`) decides whether the sample is now
        ``parked``. An upload already done (or a label written) keeps its stage, so it stays
        usable for the next attempt. Read and write are one transaction.
        """
        counted, now = (0 if transient else 1), time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT stage, attempts FROM samples"
                    " WHERE dataset=? AND labelset=? AND sample_uuid=?",
                    (dataset, labelset, sample_uuid),
                ).fetchone()
                attempts = (int(row[1]) if row else 0) + counted
                if row is not None and row[0] in (UPLOADED, LABELED):
                    stage = str(row[0])
                else:
                    stage = PARKED if counted and parks(attempts) else FAILED
                self._db.execute(
                    "INSERT INTO samples (dataset, labelset, sample_uuid, sample_name, stage,"
                    " reason, attempts, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (dataset, labelset, sample_uuid) DO UPDATE SET"
                    " stage=excluded.stage, reason=excluded.reason, attempts=excluded.attempts,"
                    " updated_at=excluded.updated_at",
                    (*(dataset, labelset, sample_uuid, sample_name), stage, reason, attempts, now),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return stage

    def parked(self, dataset: str, labelset: str) -> list[SampleRecord]:
        """The samples parked after too many failures, oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_RECORD_COLUMNS} FROM samples WHERE dataset=? AND labelset=?"
                " AND stage='parked' ORDER BY updated_at",
                (dataset, labelset),
            ).fetchall()
        return [_record(row) for row in rows]

    def leases(self, dataset: str, labelset: str) -> list[tuple[str, str, float]]:
        """``(sample_uuid, owner, expires_at)`` of every lease held on the labelset."""
        with self._lock:
            rows = self._db.execute(
                "SELECT sample_uuid, owner, expires_at FROM leases WHERE dataset=? AND labelset=?"
                " ORDER BY expires_at",
                (dataset, labelset),
            ).fetchall()
        return [(str(u), str(o), float(e)) for u, o, e in rows]

    def claim(
        self, dataset: str, labelset: str, sample_uuid: str, owner: str, ttl_s: float
    ) -> str | None:
        """Take the lease on a sample; returns None on success, else the owner holding it.

        One statement (an upsert whose update only applies when the lease is free, expired or
        ours), so two processes racing for a sample cannot both win.
        """
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO leases (dataset, labelset, sample_uuid, owner, expires_at)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (dataset, labelset, sample_uuid) DO UPDATE SET"
                " owner=excluded.owner, expires_at=excluded.expires_at"
                " WHERE leases.owner=excluded.owner OR leases.expires_at < ?",
                (dataset, labelset, sample_uuid, owner, now + ttl_s, now),
            )
            row = self._db.execute(
                "SELECT owner FROM leases WHERE dataset=? AND labelset=? AND sample_uuid=?",
                (dataset, labelset, sample_uuid),
            ).fetchone()
        holder = row[0] if row else None
        return None if holder == owner else holder

    def take_over(
        self, dataset: str, labelset: str, sample_uuid: str, dead: str, owner: str, ttl_s: float
    ) -> bool:
        """Move a lease from an owner known to be dead to ``owner``; False if it changed hands."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE leases SET owner=?, expires_at=? WHERE dataset=? AND labelset=?"
                " AND sample_uuid=? AND owner=?",
                (owner, time.time() + ttl_s, dataset, labelset, sample_uuid, dead),
            )
        return cursor.rowcount == 1

    def release(self, dataset: str, labelset: str, sample_uuid: str, owner: str) -> None:
        with self._lock:
            self._db.execute(
                "DELETE FROM leases WHERE dataset=? AND labelset=? AND sample_uuid=? AND owner=?",
                (dataset, labelset, sample_uuid, owner),
            )

    def release_all(self, owner: str) -> None:
        """Drop every lease of a worker that is stopping (abandoned samples become free)."""
        with self._lock:
            self._db.execute("DELETE FROM leases WHERE owner=?", (owner,))

    def frame_counts(self, dataset: str, labelset: str) -> dict[str, int]:
        """Uploaded frames per sequence whose label is not written yet (a half-done run)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT sample_uuid, COUNT(*) FROM frames WHERE dataset=? AND labelset=?"
                " GROUP BY sample_uuid ORDER BY sample_uuid",
                (dataset, labelset),
            ).fetchall()
        return {str(uuid): int(count) for uuid, count in rows}

    def counts(self, dataset: str, labelset: str) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT stage, COUNT(*) FROM samples WHERE dataset=? AND labelset=? GROUP BY stage",
                (dataset, labelset),
            ).fetchall()
        return {stage: count for stage, count in rows}

    def datasets(self) -> list[tuple[str, str]]:
        """Every (dataset, labelset) with a sample record, so a typo can be pointed out."""
        with self._lock:
            query = "SELECT DISTINCT dataset, labelset FROM samples ORDER BY dataset, labelset"
            return [(str(d), str(s)) for d, s in self._db.execute(query).fetchall()]

    def _upsert(
        self,
        dataset: str,
        labelset: str,
        sample_uuid: str,
        sample_name: str,
        *,
        stage: str,
        reason: str | None,
        asset_url: str | None = None,
        attributes: str | None = None,
        score: float | None = None,
    ) -> None:
        # COALESCE keeps the uploaded asset and attributes when a later stage is recorded.
        with self._lock:
            self._db.execute(
                "INSERT INTO samples (dataset, labelset, sample_uuid, sample_name, stage,"
                " asset_url, attributes, score, reason, attempts, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)"
                " ON CONFLICT (dataset, labelset, sample_uuid) DO UPDATE SET"
                " sample_name=excluded.sample_name, stage=excluded.stage,"
                " asset_url=COALESCE(excluded.asset_url, asset_url),"
                " attributes=COALESCE(excluded.attributes, attributes),"
                " score=COALESCE(excluded.score, score),"
                " reason=excluded.reason, updated_at=excluded.updated_at",
                (
                    dataset,
                    labelset,
                    sample_uuid,
                    sample_name,
                    stage,
                    asset_url,
                    attributes,
                    score,
                    reason,
                    time.time(),
                ),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
