"""Store queries for uploaded assets: the upload slots ``POST /assets/`` issues, and their bytes.

An asset exists from the moment its slot is issued; its ``data`` arrives later through the
presigned S3 upload, and the emulator serves it publicly from then on.
"""

from __future__ import annotations

import uuid as uuid_module

from prelabel.emulator.store.records import AssetRecord, now_iso
from prelabel.emulator.store.schema import Database


class AssetQueries(Database):
    """Assets keyed by their S3-style key ``assets/{owner}/{uuid}{extension}``."""

    def create_asset(self, owner: str, filename: str, extension: str, content_type: str) -> str:
        """Register an upload slot (``POST /assets/``) and return its S3-style key."""
        asset_uuid = str(uuid_module.uuid4())
        key = f"assets/{owner}/{asset_uuid}{extension}"
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO assets (key, uuid, owner, filename, content_type, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key, asset_uuid, owner, filename, content_type, now_iso()),
            )
        return key

    def get_asset(self, key: str) -> AssetRecord:
        row = self._one(
            "SELECT key, uuid, owner, filename, content_type, created_at, data, uploads "
            "FROM assets WHERE key = ?",
            (key,),
            "The specified key does not exist.",
        )
        return AssetRecord(*row)

    def store_asset_data(self, key: str, data: bytes) -> None:
        """Save uploaded bytes under a key issued by :meth:`create_asset` (re-upload replaces)."""
        self._change(
            "UPDATE assets SET data = ?, uploads = uploads + 1 WHERE key = ?",
            (data, key),
            "The specified key does not exist.",
        )

    def asset_upload_count(self) -> int:
        """Number of distinct assets whose bytes were uploaded (retries of one key count once)."""
        [row] = self._all("SELECT COUNT(*) FROM assets WHERE data IS NOT NULL")
        return int(row[0])
