"""What every Segments.ai resource shares: the account, its store, and the label vocabulary.

Each resource module (:mod:`.users`, :mod:`.datasets`, :mod:`.samples`, :mod:`.labels`,
:mod:`.assets`) adds its handlers to :class:`ApiBase`; :class:`~.routes.SegmentsApi` combines
them. Lookups more than one resource needs (a sample's dataset, a label's target) live here, so
the resource modules never depend on each other's handlers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prelabel.emulator.store import Store
from prelabel.emulator.store.records import UNLABELED, DatasetRecord, SampleRecord, now_iso

DEFAULT_TASK_TYPE = "segmentation-bitmap"
LABEL_STATUSES = (
    "REVIEWED",
    "REVIEWING_IN_PROGRESS",
    "LABELED",
    "LABELING_IN_PROGRESS",
    "REJECTED",
    "PRELABELED",
    "SKIPPED",
    "VERIFIED",
    UNLABELED,
)


def task_type_of(dataset: DatasetRecord) -> str:
    """The dataset's task type (``segmentation-bitmap`` unless it was created with another)."""
    task_type: str = dataset.fields.get("task_type", DEFAULT_TASK_TYPE)
    return task_type


@dataclass
class ApiBase:
    """The account (API key, user) and the store every resource handler works on."""

    store: Store
    api_key: str
    username: str
    user_created_at: str = field(default_factory=now_iso)
    #: Signs image URLs for ``GET /samples/{uuid}/?include_signed_urls=1``; ``None`` signs none.
    url_signer: Callable[[str], str | None] | None = None
    #: Called with (event_type, dataset, object) after each write that Segments.ai announces
    #: by webhook (:mod:`prelabel.emulator.webhooks`); ``None``: no webhooks.
    on_event: Callable[[str, str, dict[str, Any]], object] | None = None

    def emit(self, event_type: str, dataset: str, obj: dict[str, Any]) -> None:
        """Announce one write (``sample.created``, ``label.updated``, ``label.deleted``)."""
        if self.on_event is not None:
            self.on_event(event_type, dataset, obj)

    def _dataset(self, owner: str, name: str) -> DatasetRecord:
        return self.store.get_dataset(owner, name)

    def _dataset_of(self, sample: SampleRecord) -> DatasetRecord:
        return self._dataset(*sample.dataset_full_name.split("/", 1))

    def label_target(self, sample_uuid: str, labelset: str) -> DatasetRecord:
        """The dataset of the sample, after checking the labelset exists in it."""
        sample = self.store.get_sample(sample_uuid)
        dataset = self._dataset_of(sample)
        self.store.get_labelset(dataset.id, labelset)
        return dataset
