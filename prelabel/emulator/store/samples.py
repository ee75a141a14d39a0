"""Store queries for samples, including the filtered, sorted and paged sample listing.

The listing is one indexed SQL query per page (filters, sort and paging all in the database), so
a 10,000-sample dataset lists as fast as the real service would serve it.
"""

from __future__ import annotations

import json
import sqlite3
import uuid as uuid_module
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prelabel.emulator.store.records import (
    GROUND_TRUTH,
    UNLABELED,
    Conflict,
    LabelRecord,
    NewSample,
    SampleQuery,
    SampleRecord,
    now_iso,
)
from prelabel.emulator.store.schema import (
    LABEL_COLUMN_COUNT,
    LABEL_COLUMNS,
    SAMPLE_COLUMNS,
    Database,
    fetch_sample,
    label_from_row,
    sample_from_row,
)

# Sort keys the SDK may send (``get_samples(sort=...)``) -> SQL expression.
SORT_COLUMNS: Mapping[str, str] = {
    "name": "s.name",
    "created_at": "s.created_at",
    "updated_at": "s.updated_at",
    "priority": "s.priority",
    "gt_label__updated_at": "gt.updated_at",
}


def _unchanged(value: Any) -> Any:
    return value


# How each updatable sample field is stored (keys: the :class:`NewSample` fields).
_UPDATE_COLUMNS: Mapping[str, Callable[[Any], Any]] = {
    "name": _unchanged,
    "attributes": json.dumps,
    "metadata": json.dumps,
    "priority": float,
    "readme": _unchanged,
    "assigned_labeler": _unchanged,
    "assigned_reviewer": _unchanged,
}


def _metadata_path(key: str) -> str:
    """SQLite JSON path for one top-level metadata key (quoted, so dots and spaces are safe)."""
    return '$."' + key.replace('"', '\\"') + '"'


class SampleQueries(Database):
    """Samples: bulk insert, lookup, partial update, delete and the paged listing."""

    def add_samples(
        self,
        dataset_id: int,
        samples: Iterable[NewSample],
        created_by: str,
        existing_ok: bool = False,
    ) -> list[SampleRecord]:
        """Insert samples in one transaction and return them in input order.

        A name already in the dataset raises :class:`Conflict` (``add_sample``), or, with
        ``existing_ok`` (``add_samples``, per the SDK's docstring), returns the existing sample
        unchanged.
        """
        uuids: list[str] = []
        with self._tx() as conn:
            for sample in samples:
                existing = conn.execute(
                    "SELECT uuid FROM samples WHERE dataset_id = ? AND name = ?",
                    (dataset_id, sample.name),
                ).fetchone()
                if existing is not None:
                    if not existing_ok:
                        raise Conflict(
                            f"A sample with the name '{sample.name}' already exists "
                            "in this dataset."
                        )
                    uuids.append(existing[0])
                    continue
                sample_uuid = str(uuid_module.uuid4())
                stamp = now_iso()
                conn.execute(
                    "INSERT INTO samples (uuid, dataset_id, name, attributes, metadata, priority, "
                    "readme, assigned_labeler, assigned_reviewer, created_at, created_by, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        sample_uuid,
                        dataset_id,
                        sample.name,
                        json.dumps(sample.attributes),
                        json.dumps(sample.metadata),
                        float(sample.priority),
                        sample.readme,
                        sample.assigned_labeler,
                        sample.assigned_reviewer,
                        stamp,
                        created_by,
                        stamp,
                    ),
                )
                uuids.append(sample_uuid)
            return [fetch_sample(conn, sample_uuid) for sample_uuid in uuids]

    def get_sample(self, sample_uuid: str) -> SampleRecord:
        with self._tx() as conn:
            return fetch_sample(conn, sample_uuid)

    def sample_dataset_id(self, sample_uuid: str) -> int:
        row = self._one("SELECT dataset_id FROM samples WHERE uuid = ?", (sample_uuid,))
        return int(row[0])

    def update_sample(self, sample_uuid: str, changes: Mapping[str, Any]) -> SampleRecord:
        """Apply a partial update (keys: the :class:`NewSample` fields)."""
        assignments = [
            (column, _UPDATE_COLUMNS[column](value)) for column, value in changes.items()
        ]
        with self._tx() as conn:
            current = fetch_sample(conn, sample_uuid)
            if not assignments:
                return current
            sql = ", ".join(f"{column} = ?" for column, _ in assignments)
            try:
                conn.execute(
                    f"UPDATE samples SET {sql}, updated_at = ? WHERE uuid = ?",
                    (*(value for _, value in assignments), now_iso(), sample_uuid),
                )
            except sqlite3.IntegrityError as error:
                raise Conflict("A sample with that name already exists in this dataset.") from error
            return fetch_sample(conn, sample_uuid)

    def delete_sample(self, sample_uuid: str) -> None:
        self._change("DELETE FROM samples WHERE uuid = ?", (sample_uuid,))

    def list_samples(self, query: SampleQuery) -> list[tuple[SampleRecord, LabelRecord | None]]:
        """One page of samples with each one's label in ``query.labelset`` (or ``None``)."""
        if query.sort not in SORT_COLUMNS:
            raise ValueError(f"unknown sort field {query.sort!r}")
        where = ["s.dataset_id = ?"]
        params: list[Any] = [query.labelset, GROUND_TRUTH, query.dataset_id]
        if query.name_contains:
            where.append("instr(s.name, ?) > 0")  # case-sensitive, like Django's __contains
            params.append(query.name_contains)
        for key, value in query.metadata:
            path = _metadata_path(key)
            where.append(
                "(CASE json_type(s.metadata, ?) WHEN 'true' THEN 'true' "
                "WHEN 'false' THEN 'false' ELSE CAST(json_extract(s.metadata, ?) AS TEXT) END) = ?"
            )
            params.extend([path, path, value])
        if query.label_statuses:
            marks = ", ".join("?" for _ in query.label_statuses)
            where.append(f"COALESCE(l.label_status, '{UNLABELED}') IN ({marks})")
            params.extend(query.label_statuses)
        direction = "DESC" if query.descending else "ASC"
        sql = (
            f"SELECT {LABEL_COLUMNS}, {SAMPLE_COLUMNS} FROM samples s "
            "JOIN datasets d ON d.id = s.dataset_id "
            "LEFT JOIN labels l ON l.sample_uuid = s.uuid AND l.labelset = ? "
            "LEFT JOIN labels gt ON gt.sample_uuid = s.uuid AND gt.labelset = ? "
            f"WHERE {' AND '.join(where)} "
            f"ORDER BY {SORT_COLUMNS[query.sort]} {direction}, s.seq {direction} "
            "LIMIT ? OFFSET ?"
        )
        params.extend([query.limit, query.offset])
        rows = self._all(sql, params)
        return [(sample_from_row(row[LABEL_COLUMN_COUNT:]), label_from_row(row)) for row in rows]
