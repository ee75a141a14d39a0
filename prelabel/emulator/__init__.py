"""A local emulator of the Segments.ai REST API, for tests and trials without an account.

It speaks the API over real HTTP on 127.0.0.1 so the real ``segments-ai`` SDK can be pointed at
it (``SegmentsClient(key, api_url=emulator.url)``), following ``shared/segments-api.md``. It adds
what the real service cannot give a test: seeded fault injection (:class:`FaultRule`), a request
log and write counters, signed webhook deliveries (:mod:`.webhooks`), and direct state edits that
stand in for a human annotator.

This package is test and trial infrastructure. The connector and pipeline modules must not
import it; only the ``prelabel emulator`` command and the test fixtures do.
"""

from __future__ import annotations

from prelabel.emulator.faults import FaultInjector, FaultRule
from prelabel.emulator.requestlog import RequestRecord
from prelabel.emulator.server import DEFAULT_API_KEY, DEFAULT_USERNAME, Emulator
from prelabel.emulator.store import Store

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_USERNAME",
    "Emulator",
    "FaultInjector",
    "FaultRule",
    "RequestRecord",
    "Store",
]
