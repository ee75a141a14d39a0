"""The request log: every request the SDK made, in arrival order, for tests to assert on.

Kept apart from the HTTP server, which writes it, and from :class:`~.server.Emulator` and the
``/_emulator/`` side channel, which read it, so none of them needs the others to name a record.
The ``/_emulator/`` side channel itself is never logged.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestRecord:
    """One request the emulator received (the side channel excluded).

    ``status`` is ``None`` when no answer was sent (``fault`` ``"drop"`` or ``"hang"``); ``fault``
    names the injected failure (``"error"``, ``"throttle"``, ``"drop"``, ``"hang"``) or is
    ``None`` for a normal answer.
    """

    method: str
    path: str
    query: str
    status: int | None
    fault: str | None


class RequestLog:
    """The records of one emulator's requests, safe to write from many handler threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []

    def record(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)
        logger.debug("%s %s -> %s (%s)", record.method, record.path, record.status, record.fault)

    def records(self) -> list[RequestRecord]:
        """A copy of the log, oldest first."""
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def count(self, method: str | None = None, path: str = "*") -> int:
        """How many records match ``method`` (``None``: any) and the ``path`` glob."""
        return sum(
            1
            for record in self.records()
            if (method is None or record.method == method.upper())
            and fnmatch.fnmatchcase(record.path, path)
        )
