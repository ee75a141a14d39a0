"""The plain records the store takes and returns, and the errors it raises.

Kept apart from the SQL so the API layer can name a :class:`SampleRecord` or catch
:class:`NotFound` without depending on how (or whether) rows are stored. ``str(error)`` of a
:class:`StoreError` is the message the API puts into the DRF-style ``detail``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

GROUND_TRUTH = "ground-truth"
UNLABELED = "UNLABELED"


class StoreError(Exception):
    """Base of the store's errors; ``str(error)`` is the message for the API's ``detail``."""


class NotFound(StoreError):
    """The dataset, labelset, sample, label or asset does not exist."""


class Conflict(StoreError):
    """A dataset, labelset or sample with that name already exists."""


def now_iso() -> str:
    """UTC timestamp as the API writes it (microseconds keep creation order sortable)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class DatasetRecord:
    """A dataset row. ``fields`` holds every setting the client sent (task type, categories...)."""

    id: int
    owner: str
    name: str
    created_at: str
    fields: dict[str, Any]

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass(frozen=True)
class LabelsetRecord:
    name: str
    description: str
    created_at: str

    @property
    def is_groundtruth(self) -> bool:
        return self.name == GROUND_TRUTH


@dataclass(frozen=True)
class SampleRecord:
    uuid: str
    dataset_full_name: str
    name: str
    attributes: dict[str, Any]
    metadata: dict[str, Any]
    priority: float
    readme: str
    assigned_labeler: str | None
    assigned_reviewer: str | None
    created_at: str
    created_by: str
    updated_at: str


@dataclass(frozen=True)
class LabelRecord:
    sample_uuid: str
    labelset: str
    label_status: str
    attributes: dict[str, Any] | None
    score: float | None
    created_at: str
    created_by: str
    updated_at: str
    updated_by: str | None
    reviewed_at: str | None
    reviewed_by: str | None


@dataclass(frozen=True)
class AssetRecord:
    key: str
    uuid: str
    owner: str
    filename: str
    content_type: str
    created_at: str
    data: bytes | None
    uploads: int


@dataclass(frozen=True)
class NewSample:
    """A sample to insert, as the client described it."""

    name: str
    attributes: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    priority: float = 0.0
    readme: str = ""
    assigned_labeler: str | None = None
    assigned_reviewer: str | None = None


@dataclass(frozen=True)
class SampleQuery:
    """One page of a sample listing, with every filter ``get_samples`` can send.

    ``labelset`` is where ``label_statuses`` are evaluated and which label is returned with each
    sample; ``UNLABELED`` in ``label_statuses`` means "no label in that labelset".
    """

    dataset_id: int
    labelset: str = GROUND_TRUTH
    name_contains: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    label_statuses: tuple[str, ...] = ()
    sort: str = "name"
    descending: bool = False
    offset: int = 0
    limit: int = 1000
