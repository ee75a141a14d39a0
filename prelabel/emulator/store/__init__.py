"""The emulator's state: datasets, labelsets, samples, labels and uploaded assets.

One implementation serves both modes: SQLite on ``:memory:`` by default, or on a file so the
state survives a restart. Using SQLite for the in-memory case too means the sample list is
filtered, sorted and paged by the database (a 10,000-sample listing costs one indexed query per
page, not a Python scan), and the two modes cannot drift apart.

The store knows nothing about HTTP or the wire format: it takes and returns plain records
(:mod:`.records`), and raises :class:`NotFound` / :class:`Conflict` with a message the API layer
puts into the DRF-style ``detail``. All access goes through one connection guarded by a lock
(:mod:`.schema`), because the HTTP server handles each connection in its own thread. The queries
are grouped by resource, one module each; :class:`Store` is all of them on that one connection.
"""

from __future__ import annotations

from prelabel.emulator.store.assets import AssetQueries
from prelabel.emulator.store.datasets import DatasetQueries
from prelabel.emulator.store.labels import LabelQueries
from prelabel.emulator.store.records import Conflict, NotFound, StoreError
from prelabel.emulator.store.samples import SampleQueries

__all__ = ["Conflict", "NotFound", "Store", "StoreError"]


class Store(DatasetQueries, SampleQueries, LabelQueries, AssetQueries):
    """Emulator state in SQLite; ``path=None`` keeps it in memory for the life of the object."""
