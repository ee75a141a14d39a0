"""Store queries for labels, and the per-label count of API writes tests assert on.

Writes from the API and edits standing in for a human annotator share these queries; only the
former pass ``count_write=True``, so :meth:`LabelQueries.label_write_count` tells a test how many
times the connector wrote a label, whatever a "human" did in between.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from prelabel.emulator.store.records import LabelRecord, NotFound, now_iso
from prelabel.emulator.store.schema import Database, fetch_label, fetch_sample


class LabelQueries(Database):
    """Labels of samples, one per ``(sample_uuid, labelset)``, and their write counters."""

    def get_label(self, sample_uuid: str, labelset: str) -> LabelRecord | None:
        with self._tx() as conn:
            return fetch_label(conn, sample_uuid, labelset)

    def put_label(
        self,
        sample_uuid: str,
        labelset: str,
        label_status: str,
        attributes: dict[str, Any] | None,
        score: float | None,
        by: str,
        count_write: bool,
    ) -> tuple[LabelRecord, bool]:
        """Create or replace a label; returns it and whether it was created.

        Replacing keeps ``created_at``/``created_by`` (the label is the same object, edited).
        ``count_write`` bumps :meth:`label_write_count`, which only API writes do.
        """
        stamp = now_iso()
        with self._tx() as conn:
            fetch_sample(conn, sample_uuid)
            current = fetch_label(conn, sample_uuid, labelset)
            created_at = stamp if current is None else current.created_at
            created_by = by if current is None else current.created_by
            conn.execute(
                "INSERT OR REPLACE INTO labels (sample_uuid, labelset, label_status, attributes, "
                "score, created_at, created_by, updated_at, updated_by, reviewed_at, reviewed_by) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
                (
                    sample_uuid,
                    labelset,
                    label_status,
                    None if attributes is None else json.dumps(attributes),
                    score,
                    created_at,
                    created_by,
                    stamp,
                    by,
                ),
            )
            label = self._written(conn, sample_uuid, labelset, count_write)
        return label, current is None

    def patch_label(
        self,
        sample_uuid: str,
        labelset: str,
        changes: Mapping[str, Any],
        by: str,
        count_write: bool,
    ) -> LabelRecord:
        """Change some of ``label_status``, ``attributes``, ``score``; :class:`NotFound` if none."""
        with self._tx() as conn:
            current = fetch_label(conn, sample_uuid, labelset)
            if current is None:
                raise NotFound("Not found.")
            attributes = changes.get("attributes", current.attributes)
            conn.execute(
                "UPDATE labels SET label_status = ?, attributes = ?, score = ?, updated_at = ?, "
                "updated_by = ? WHERE sample_uuid = ? AND labelset = ?",
                (
                    changes.get("label_status", current.label_status),
                    None if attributes is None else json.dumps(attributes),
                    changes.get("score", current.score),
                    now_iso(),
                    by,
                    sample_uuid,
                    labelset,
                ),
            )
            return self._written(conn, sample_uuid, labelset, count_write)

    def delete_label(self, sample_uuid: str, labelset: str) -> None:
        self._change(
            "DELETE FROM labels WHERE sample_uuid = ? AND labelset = ?", (sample_uuid, labelset)
        )

    def _written(
        self, conn: sqlite3.Connection, sample_uuid: str, labelset: str, count_write: bool
    ) -> LabelRecord:
        """The label just written, after counting the write if ``count_write``."""
        if count_write:
            self._count_write(conn, sample_uuid, labelset)
        label = fetch_label(conn, sample_uuid, labelset)
        assert label is not None
        return label

    def _count_write(self, conn: sqlite3.Connection, sample_uuid: str, labelset: str) -> None:
        conn.execute(
            "INSERT INTO label_writes (sample_uuid, labelset, count) VALUES (?, ?, 1) "
            "ON CONFLICT (sample_uuid, labelset) DO UPDATE SET count = count + 1",
            (sample_uuid, labelset),
        )

    def label_write_count(self, sample_uuid: str, labelset: str) -> int:
        with self._tx() as conn:
            row = conn.execute(
                "SELECT count FROM label_writes WHERE sample_uuid = ? AND labelset = ?",
                (sample_uuid, labelset),
            ).fetchone()
        return 0 if row is None else int(row[0])

    def label_write_counts(self) -> dict[tuple[str, str], int]:
        rows = self._all("SELECT sample_uuid, labelset, count FROM label_writes")
        return {(row[0], row[1]): int(row[2]) for row in rows}
