"""The SQLite side of the store: the tables, the one locked connection, rows to records.

Every per-resource query module (:mod:`.datasets`, :mod:`.samples`, :mod:`.labels`,
:mod:`.assets`) builds on :class:`Database`, so they share one connection and one lock, and the
row layouts that more than one of them reads (a sample listing joins labels; a label write checks
its sample) live here once.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from os import PathLike
from typing import Any

from prelabel.emulator.store.records import LabelRecord, NotFound, SampleRecord

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    fields TEXT NOT NULL,
    UNIQUE (owner, name)
);
CREATE TABLE IF NOT EXISTS labelsets (
    dataset_id INTEGER NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (dataset_id, name)
);
CREATE TABLE IF NOT EXISTS samples (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid TEXT NOT NULL UNIQUE,
    dataset_id INTEGER NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    attributes TEXT NOT NULL,
    metadata TEXT NOT NULL,
    priority REAL NOT NULL,
    readme TEXT NOT NULL,
    assigned_labeler TEXT,
    assigned_reviewer TEXT,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (dataset_id, name)
);
CREATE TABLE IF NOT EXISTS labels (
    sample_uuid TEXT NOT NULL REFERENCES samples (uuid) ON DELETE CASCADE,
    labelset TEXT NOT NULL,
    label_status TEXT NOT NULL,
    attributes TEXT,
    score REAL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT,
    reviewed_at TEXT,
    reviewed_by TEXT,
    PRIMARY KEY (sample_uuid, labelset)
);
CREATE TABLE IF NOT EXISTS label_writes (
    sample_uuid TEXT NOT NULL,
    labelset TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (sample_uuid, labelset)
);
CREATE TABLE IF NOT EXISTS assets (
    key TEXT PRIMARY KEY,
    uuid TEXT NOT NULL,
    owner TEXT NOT NULL,
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    created_at TEXT NOT NULL,
    data BLOB,
    uploads INTEGER NOT NULL DEFAULT 0
);
"""

SAMPLE_COLUMNS = (
    "s.uuid, d.owner, d.name, s.name, s.attributes, s.metadata, s.priority, s.readme, "
    "s.assigned_labeler, s.assigned_reviewer, s.created_at, s.created_by, s.updated_at"
)
LABEL_COLUMNS = (
    "l.sample_uuid, l.labelset, l.label_status, l.attributes, l.score, l.created_at, "
    "l.created_by, l.updated_at, l.updated_by, l.reviewed_at, l.reviewed_by"
)
LABEL_COLUMN_COUNT = 11


def sample_from_row(row: Sequence[Any]) -> SampleRecord:
    """A row of :data:`SAMPLE_COLUMNS` as a record (the columns after ``metadata`` map 1:1)."""
    sample_uuid, owner, dataset, name, attributes, metadata, *rest = row
    return SampleRecord(
        sample_uuid, f"{owner}/{dataset}", name, json.loads(attributes), json.loads(metadata), *rest
    )


def label_from_row(row: Sequence[Any]) -> LabelRecord | None:
    """A row starting with :data:`LABEL_COLUMNS` as a record (the columns after ``attributes``
    map 1:1); ``None`` when a LEFT JOIN found no label."""
    if row[0] is None:  # LEFT JOIN found no label
        return None
    sample_uuid, labelset, label_status, attributes, *rest = row[:LABEL_COLUMN_COUNT]
    decoded = None if attributes is None else json.loads(attributes)
    return LabelRecord(sample_uuid, labelset, label_status, decoded, *rest)


def fetch_one(
    conn: sqlite3.Connection, sql: str, params: Sequence[Any], missing: str = "Not found."
) -> Any:
    """The first row of a query; :class:`NotFound` with the message ``missing`` if none."""
    row = conn.execute(sql, params).fetchone()
    if row is None:
        raise NotFound(missing)
    return row


def fetch_sample(conn: sqlite3.Connection, sample_uuid: str) -> SampleRecord:
    row = fetch_one(
        conn,
        f"SELECT {SAMPLE_COLUMNS} FROM samples s JOIN datasets d ON d.id = s.dataset_id "
        "WHERE s.uuid = ?",
        (sample_uuid,),
    )
    return sample_from_row(row)


def fetch_label(conn: sqlite3.Connection, sample_uuid: str, labelset: str) -> LabelRecord | None:
    row = conn.execute(
        f"SELECT {LABEL_COLUMNS} FROM labels l WHERE l.sample_uuid = ? AND l.labelset = ?",
        (sample_uuid, labelset),
    ).fetchone()
    return None if row is None else label_from_row(row)


class Database:
    """The SQLite connection every query module shares; ``path=None`` keeps it in memory."""

    def __init__(self, path: str | PathLike[str] | None = None) -> None:
        self.path = None if path is None else str(path)
        self._conn = sqlite3.connect(
            ":memory:" if self.path is None else self.path, check_same_thread=False
        )
        self._lock = threading.RLock()
        with self._lock, self._conn:
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.executescript(_SCHEMA)
            self._conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One locked transaction: committed on success, rolled back on any error."""
        with self._lock, self._conn:
            yield self._conn

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Every row of a read-only query."""
        with self._tx() as conn:
            return conn.execute(sql, params).fetchall()

    def _one(self, sql: str, params: Sequence[Any], missing: str = "Not found.") -> Any:
        """The first row of a read-only query; :class:`NotFound` with ``missing`` if none."""
        with self._tx() as conn:
            row = conn.execute(sql, params).fetchone()
        if row is None:
            raise NotFound(missing)
        return row

    def _change(self, sql: str, params: Sequence[Any], missing: str = "Not found.") -> None:
        """Run one UPDATE or DELETE; :class:`NotFound` with ``missing`` if it hit no row."""
        with self._tx() as conn:
            changed = conn.execute(sql, params).rowcount
        if not changed:
            raise NotFound(missing)
