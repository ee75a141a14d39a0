"""Store queries for datasets and their labelsets (a labelset only exists inside a dataset)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from prelabel.emulator.store.records import (
    GROUND_TRUTH,
    UNLABELED,
    Conflict,
    DatasetRecord,
    LabelsetRecord,
    now_iso,
)
from prelabel.emulator.store.schema import Database


class DatasetQueries(Database):
    """Datasets (each created with its ``ground-truth`` labelset) and labelsets."""

    # Datasets ------------------------------------------------------------------------------

    def create_dataset(self, owner: str, name: str, fields: Mapping[str, Any]) -> DatasetRecord:
        """Create a dataset with its ``ground-truth`` labelset; :class:`Conflict` if it exists."""
        created = now_iso()
        with self._tx() as conn:
            try:
                cursor = conn.execute(
                    "INSERT INTO datasets (owner, name, created_at, fields) VALUES (?, ?, ?, ?)",
                    (owner, name, created, json.dumps(dict(fields))),
                )
            except sqlite3.IntegrityError as error:
                raise Conflict(f"A dataset with the name '{name}' already exists.") from error
            dataset_id = cursor.lastrowid
            conn.execute(
                "INSERT INTO labelsets (dataset_id, name, description, created_at) "
                "VALUES (?, ?, '', ?)",
                (dataset_id, GROUND_TRUTH, created),
            )
        assert dataset_id is not None
        return DatasetRecord(dataset_id, owner, name, created, dict(fields))

    def get_dataset(self, owner: str, name: str) -> DatasetRecord:
        row = self._one(
            "SELECT id, owner, name, created_at, fields FROM datasets WHERE owner = ? AND name = ?",
            (owner, name),
        )
        return DatasetRecord(row[0], row[1], row[2], row[3], json.loads(row[4]))

    def list_datasets(self, owner: str, offset: int, limit: int) -> list[DatasetRecord]:
        rows = self._all(
            "SELECT id, owner, name, created_at, fields FROM datasets WHERE owner = ? "
            "ORDER BY created_at, id LIMIT ? OFFSET ?",
            (owner, limit, offset),
        )
        return [DatasetRecord(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def owners(self) -> set[str]:
        """Everyone who owns a dataset (users and organizations), for ``GET /users/{name}``."""
        return {row[0] for row in self._all("SELECT DISTINCT owner FROM datasets")}

    def update_dataset(self, dataset: DatasetRecord, changes: Mapping[str, Any]) -> DatasetRecord:
        merged = {**dataset.fields, **changes}
        with self._tx() as conn:
            conn.execute(
                "UPDATE datasets SET fields = ? WHERE id = ?", (json.dumps(merged), dataset.id)
            )
        return DatasetRecord(dataset.id, dataset.owner, dataset.name, dataset.created_at, merged)

    def delete_dataset(self, dataset: DatasetRecord) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM datasets WHERE id = ?", (dataset.id,))

    def dataset_counts(self, dataset_id: int) -> dict[str, int]:
        """Samples per ground-truth label status (``UNLABELED`` = no label) plus ``TOTAL``."""
        rows = self._all(
            "SELECT COALESCE(l.label_status, ?), COUNT(*) FROM samples s "
            "LEFT JOIN labels l ON l.sample_uuid = s.uuid AND l.labelset = ? "
            "WHERE s.dataset_id = ? GROUP BY 1",
            (UNLABELED, GROUND_TRUTH, dataset_id),
        )
        counts = {status: count for status, count in rows}
        counts["TOTAL"] = sum(counts.values())
        return counts

    # Labelsets -----------------------------------------------------------------------------

    def list_labelsets(self, dataset_id: int) -> list[LabelsetRecord]:
        rows = self._all(
            "SELECT name, description, created_at FROM labelsets WHERE dataset_id = ? "
            "ORDER BY created_at, name",
            (dataset_id,),
        )
        return [LabelsetRecord(*row) for row in rows]

    def get_labelset(self, dataset_id: int, name: str) -> LabelsetRecord:
        row = self._one(
            "SELECT name, description, created_at FROM labelsets WHERE dataset_id = ? AND name = ?",
            (dataset_id, name),
            f"Labelset '{name}' not found.",
        )
        return LabelsetRecord(*row)

    def add_labelset(self, dataset_id: int, name: str, description: str) -> LabelsetRecord:
        created = now_iso()
        with self._tx() as conn:
            try:
                conn.execute(
                    "INSERT INTO labelsets (dataset_id, name, description, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (dataset_id, name, description, created),
                )
            except sqlite3.IntegrityError as error:
                raise Conflict(f"A labelset with the name '{name}' already exists.") from error
        return LabelsetRecord(name, description, created)
