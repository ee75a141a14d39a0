"""What the bucket readers share: a client built once on first use, and the size limit.

Plain HTTP has its own size limit, in the Segments client's download.
"""

from __future__ import annotations

import io
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

from prelabel.config import RemoteSettings
from prelabel.errors import StorageError
from prelabel.storage.urls import BucketObject


class BucketReader(ABC):
    """One storage client, built on first use (under a lock) and shared by every thread.

    Subclasses build the client, telling whether it reads anonymously (no credentials found),
    and read one object into a :class:`BoundedBuffer`.
    """

    def __init__(self, settings: RemoteSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._client: Any = None
        self._anonymous = False

    @abstractmethod
    def read(self, obj: BucketObject) -> bytes:
        """The object's bytes; raises a :class:`StorageError` subclass naming the cause."""

    @abstractmethod
    def _build_client(self) -> tuple[Any, bool]:
        """A new client and whether it is anonymous; :class:`MissingExtraError` without the
        library."""

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client, self._anonymous = self._build_client()
            return self._client

    def _buffer(self, obj: BucketObject) -> BoundedBuffer:
        return BoundedBuffer(self._settings.max_image_bytes, str(obj))

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class BoundedBuffer(io.BytesIO):
    """An in-memory file that refuses to grow past ``limit`` bytes.

    Client libraries stream into it (``download_to_file``) or we feed it chunks, so an
    oversized object is abandoned after ``limit`` bytes instead of filling memory.
    """

    def __init__(self, limit: int, where: str) -> None:
        super().__init__()
        self.limit = limit
        self.where = where

    def write(self, data: Any, /) -> int:
        if self.tell() + len(data) > self.limit:
            raise StorageError(f"{self.where} is over the {self.limit:,} byte limit")
        return super().write(data)

    def check_declared(self, size: int | None) -> None:
        """Refuse before reading when the server already says the object is too large."""
        if size is not None and size > self.limit:
            raise StorageError(f"{self.where} is {size:,} bytes, over the {self.limit:,} limit")

    def fill(self, chunks: Iterable[bytes]) -> bytes:
        for chunk in chunks:
            self.write(chunk)
        return self.getvalue()
