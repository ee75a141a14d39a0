"""Webhook message ids already acted on, kept in the state file so a restart still dedupes.

Svix delivers at least once: a retry after a lost answer, or a replay from the portal, carries
the same ``svix-id``. Table ``webhook_messages`` (in the same SQLite file as
:mod:`prelabel.state`, on its own connection) holds one row per message id with the time it was
received. A row older than the retention (48 hours, longer than Svix's ~27.5 h retry schedule)
no longer counts and is pruned; a replay after that is acted on again, which is safe because
acting on a sample re-reads it first.

Each check-and-record is one statement, so two deliveries of one id racing (two connections,
even two processes on this file) record it once.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

RETENTION_S = 48 * 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_messages (
    message_id TEXT PRIMARY KEY,
    event_type TEXT,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_messages_received ON webhook_messages (received_at);
"""

#: Prune once per this many recorded messages (and at open).
_PRUNE_EVERY = 1000


class DeliveryLog:
    """Thread-safe record of message ids seen within the retention window."""

    def __init__(
        self,
        path: Path,
        *,
        retention_s: float = RETENTION_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._retention_s = retention_s
        self._clock = clock
        self._lock = threading.Lock()
        self._since_prune = 0
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self.prune()

    def seen(self, message_id: str) -> bool:
        """True when ``message_id`` was recorded within the retention window."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM webhook_messages WHERE message_id=? AND received_at>=?",
                (message_id, self._cutoff()),
            ).fetchone()
        return row is not None

    def record(self, message_id: str, event_type: str | None) -> bool:
        """Record ``message_id``; False when it was already recorded within the window."""
        with self._lock:
            now = self._clock()
            cursor = self._db.execute(
                "INSERT INTO webhook_messages (message_id, event_type, received_at)"
                " VALUES (?, ?, ?) ON CONFLICT (message_id) DO UPDATE SET"
                " event_type=excluded.event_type, received_at=excluded.received_at"
                " WHERE webhook_messages.received_at < ?",
                (message_id, event_type, now, now - self._retention_s),
            )
            self._since_prune += 1
            due = self._since_prune >= _PRUNE_EVERY
        if due:
            self.prune()
        return cursor.rowcount == 1

    def prune(self) -> int:
        """Delete the ids past the window; returns how many."""
        with self._lock:
            self._since_prune = 0
            cursor = self._db.execute(
                "DELETE FROM webhook_messages WHERE received_at < ?", (self._cutoff(),)
            )
        return cursor.rowcount

    def __len__(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM webhook_messages").fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _cutoff(self) -> float:
        return self._clock() - self._retention_s
