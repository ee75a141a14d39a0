"""The label resource, ``/labels/{sample_uuid}/{labelset}``, and the JSON shape of a label.

``PUT`` and ``PATCH`` validate as the real server does: only the statuses the docs allow, and,
for segmentation-bitmap datasets, the shape of the label attributes (spec section 5), so a
write the real service would refuse is refused here too. Sequence labels are checked against
the sample's frames as emulator policy (:mod:`.shapes`). These are the writes
:meth:`~prelabel.emulator.store.labels.LabelQueries.label_write_count` counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prelabel.emulator.api.base import ApiBase, task_type_of
from prelabel.emulator.api.shapes import check_label_attributes, frame_count
from prelabel.emulator.api.urls import local_urls, portable_urls
from prelabel.emulator.api.validation import require_object
from prelabel.emulator.store.records import DatasetRecord, LabelRecord, NotFound
from prelabel.emulator.wire import Request, Response, field_error, json_response

# What ``PUT /labels/...`` accepts per the docs (VERIFIED only where the dataset enables it).
WRITABLE_STATUSES = frozenset({"LABELED", "REVIEWED", "REJECTED", "PRELABELED", "SKIPPED"})


def label_json(label: LabelRecord, task_type: str, base_url: str) -> dict[str, Any]:
    return {
        "sample_uuid": label.sample_uuid,
        "label_type": task_type,
        "label_status": label.label_status,
        "labelset": label.labelset,
        "attributes": local_urls(label.attributes, base_url),
        "created_at": label.created_at,
        "created_by": label.created_by,
        "updated_at": label.updated_at,
        "updated_by": label.updated_by,
        "score": label.score,
        "rating": None,
        "reviewed_at": label.reviewed_at,
        "reviewed_by": label.reviewed_by,
    }


def label_summary(label: LabelRecord) -> dict[str, Any]:
    """The short form of a label that a sample listing embeds without ``include_full_label``."""
    return {
        "label_status": label.label_status,
        "score": label.score,
        "updated_at": label.updated_at,
        "created_by": label.created_by,
        "reviewed_by": label.reviewed_by,
    }


def _score(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise field_error("score", "A valid number is required.")
    return float(value)


def category_ids_of(dataset: DatasetRecord) -> frozenset[int]:
    """The ids of the dataset's categories (vector labels may use only these)."""
    task_attributes = dataset.fields.get("task_attributes") or {}
    return frozenset(
        c["id"] for c in task_attributes.get("categories") or () if isinstance(c.get("id"), int)
    )


def _validated_label_changes(
    dataset: DatasetRecord, body: Mapping[str, Any], partial: bool, sample_frames: int
) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if "label_status" in body or not partial:
        status = body.get("label_status")
        writable = set(WRITABLE_STATUSES)
        if dataset.fields.get("enable_label_status_verified"):
            writable.add("VERIFIED")
        if status not in writable:
            raise field_error("label_status", f'"{status}" is not a valid choice.')
        changes["label_status"] = status
    if "attributes" in body or not partial:
        attributes = body.get("attributes")
        check_label_attributes(
            task_type_of(dataset), attributes, sample_frames, category_ids_of(dataset)
        )
        changes["attributes"] = attributes
    if "score" in body or not partial:
        changes["score"] = _score(body.get("score"))
    return changes


class LabelsApi(ApiBase):
    """Reading, writing (``PUT`` replaces, ``PATCH`` changes some fields) and deleting labels."""

    def get_label(self, request: Request, uuid: str, labelset: str) -> Response:
        dataset = self.label_target(uuid, labelset)
        label = self.store.get_label(uuid, labelset)
        if label is None:
            raise NotFound("Not found.")
        return json_response(200, label_json(label, task_type_of(dataset), request.base_url))

    def _label_write(
        self, request: Request, uuid: str, labelset: str, partial: bool
    ) -> tuple[DatasetRecord, dict[str, Any]]:
        """The label's dataset and the validated changes the request body asks for."""
        dataset = self.label_target(uuid, labelset)
        body = require_object(request.json(), "non_field_errors")
        frames = frame_count(self.store.get_sample(uuid).attributes)
        return dataset, _validated_label_changes(dataset, body, partial, frames)

    def put_label(self, request: Request, uuid: str, labelset: str) -> Response:
        dataset, changes = self._label_write(request, uuid, labelset, partial=False)
        label, created = self.store.put_label(
            uuid,
            labelset,
            changes["label_status"],
            portable_urls(changes["attributes"], request.base_url),
            changes["score"],
            by=self.username,
            count_write=True,
        )
        data = label_json(label, task_type_of(dataset), request.base_url)
        self.emit("label.updated", dataset.full_name, data)
        return json_response(201 if created else 200, data)

    def patch_label(self, request: Request, uuid: str, labelset: str) -> Response:
        dataset, changes = self._label_write(request, uuid, labelset, partial=True)
        if "attributes" in changes:
            changes["attributes"] = portable_urls(changes["attributes"], request.base_url)
        label = self.store.patch_label(uuid, labelset, changes, self.username, count_write=True)
        data = label_json(label, task_type_of(dataset), request.base_url)
        self.emit("label.updated", dataset.full_name, data)
        return json_response(200, data)

    def delete_label(self, request: Request, uuid: str, labelset: str) -> Response:
        dataset = self.label_target(uuid, labelset)
        self.store.delete_label(uuid, labelset)
        self.emit("label.deleted", dataset.full_name, {"sample_uuid": uuid, "labelset": labelset})
        return Response(204)
