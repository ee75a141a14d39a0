"""Resume records and leases, in one SQLite file per state directory."""

from prelabel.state.leases import new_owner, owner_is_dead
from prelabel.state.store import (
    FAILED,
    LABELED,
    PARKED,
    SKIPPED,
    UPLOADED,
    SampleRecord,
    StateStore,
    default_state_dir,
)

__all__ = [
    "FAILED",
    "LABELED",
    "PARKED",
    "SKIPPED",
    "UPLOADED",
    "SampleRecord",
    "StateStore",
    "default_state_dir",
    "new_owner",
    "owner_is_dead",
]
