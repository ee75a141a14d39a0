"""The dataset and labelset resources: ``/user/datasets``, ``/datasets/{owner}/{name}``, ...

A dataset keeps every setting the client sent in its ``fields``; :meth:`DatasetsApi.dataset_json`
fills in the defaults for the rest, because the SDK's pydantic ``Dataset`` model requires every
field (``null`` booleans fail its validation).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prelabel.emulator.api.base import DEFAULT_TASK_TYPE, LABEL_STATUSES, ApiBase
from prelabel.emulator.api.validation import (
    check_name,
    check_page,
    page_number,
    per_page,
    require_object,
)
from prelabel.emulator.store.records import DatasetRecord, LabelsetRecord
from prelabel.emulator.wire import Request, Response, field_error, json_response

TASK_TYPES = frozenset(
    {
        "segmentation-bitmap",
        "segmentation-bitmap-highres",
        "image-segmentation-sequence",
        "bboxes",
        "vector",
        "image-vector-sequence",
        "keypoints",
        "pointcloud-cuboid",
        "pointcloud-cuboid-sequence",
        "pointcloud-segmentation",
        "pointcloud-segmentation-sequence",
        "pointcloud-vector",
        "pointcloud-vector-sequence",
        "multisensor-sequence",
        "",
    }
)
DATASET_CATEGORIES = frozenset(
    {"street_scenery", "garden", "agriculture", "satellite", "people", "medical", "fruit", "other"}
)
DEFAULT_TASK_ATTRIBUTES: Mapping[str, Any] = {
    "format_version": "0.1",
    "categories": [{"id": 1, "name": "object"}],
}
# Dataset booleans the SDK's ``Dataset`` model requires (``null`` fails its validation).
_DATASET_BOOL_DEFAULTS: Mapping[str, bool] = {
    "public": False,
    "archived": False,
    "enable_ratings": False,
    "enable_skip_labeling": True,
    "enable_skip_reviewing": False,
    "enable_save_button": False,
    "enable_label_status_verified": False,
    "enable_same_dimensions_track_constraint": False,
    "enable_3d_region_of_interest": False,
    "enable_3d_cuboid_rotation": False,
    "enable_confirm_on_submit": False,
    "enable_interpolation": True,
    "use_timestamps_for_interpolation": False,
    "enable_object_linking": False,
    "enable_object_link_category_restrictions": False,
    "enable_extrapolation": False,
}


def labelset_json(labelset: LabelsetRecord) -> dict[str, Any]:
    return {
        "name": labelset.name,
        "description": labelset.description,
        "is_groundtruth": labelset.is_groundtruth,
        "created_at": labelset.created_at,
    }


def _validated_dataset_fields(fields: dict[str, Any]) -> dict[str, Any]:
    if "task_type" in fields and fields["task_type"] not in TASK_TYPES:
        raise field_error("task_type", f'"{fields["task_type"]}" is not a valid choice.')
    if "category" in fields and fields["category"] not in DATASET_CATEGORIES:
        raise field_error("category", f'"{fields["category"]}" is not a valid choice.')
    if "task_attributes" in fields:
        attributes = require_object(fields["task_attributes"], "task_attributes")
        categories = attributes.get("categories", [])
        if not isinstance(categories, list) or not all(
            isinstance(c, dict) and type(c.get("id")) is int and isinstance(c.get("name"), str)
            for c in categories
        ):
            raise field_error("task_attributes", "Each category needs an int id and a name.")
    if "metadata" in fields and fields["metadata"] is not None:
        require_object(fields["metadata"], "metadata")
    return fields


class DatasetsApi(ApiBase):
    """Datasets (listing, creation, settings, deletion) and the labelsets inside them."""

    # Datasets ------------------------------------------------------------------------------

    def dataset_json(self, dataset: DatasetRecord) -> dict[str, Any]:
        """A dataset as ``GET /datasets/{owner}/{name}/`` returns it (all required fields)."""
        fields = dataset.fields
        counts = self.store.dataset_counts(dataset.id)
        label_stats = {status: counts.get(status, 0) for status in LABEL_STATUSES}
        label_stats["TOTAL"] = counts["TOTAL"]
        data: dict[str, Any] = {
            "name": dataset.name,
            "full_name": dataset.full_name,
            "cloned_from": None,
            "description": fields.get("description", ""),
            "category": fields.get("category", "other"),
            "owner": {"username": dataset.owner, "created_at": self.user_created_at},
            "created_at": dataset.created_at,
            "data_type": fields.get("data_type", "IMAGE"),
            "task_type": fields.get("task_type", DEFAULT_TASK_TYPE),
            "task_attributes": fields.get("task_attributes", DEFAULT_TASK_ATTRIBUTES),
            "label_stats": label_stats,
            "samples_count": counts["TOTAL"],
            "collaborators_count": 1,
            "labelsets": [labelset_json(ls) for ls in self.store.list_labelsets(dataset.id)],
            "role": "admin",
            "readme": fields.get("readme", ""),
            "metadata": fields.get("metadata") or {},
            "labeling_inactivity_timeout_seconds": fields.get(
                "labeling_inactivity_timeout_seconds", 300
            ),
            "noncollaborator_can_label": False,
            "noncollaborator_can_review": False,
        }
        for name, default in _DATASET_BOOL_DEFAULTS.items():
            value = fields.get(name)
            data[name] = value if isinstance(value, bool) else default
        return data

    def _list_datasets(self, request: Request, owner: str) -> Response:
        page, count = page_number(request.query), per_page(request.query, 1000)
        datasets = self.store.list_datasets(owner, (page - 1) * count, count)
        check_page(datasets, page)
        return json_response(200, [self.dataset_json(d) for d in datasets])

    def list_own_datasets(self, request: Request) -> Response:
        return self._list_datasets(request, self.username)

    def list_user_datasets(self, request: Request, username: str) -> Response:
        return self._list_datasets(request, username)

    def add_own_dataset(self, request: Request) -> Response:
        return self._add_dataset(request, self.username)

    def add_org_dataset(self, request: Request, org: str) -> Response:
        return self._add_dataset(request, org)

    def _add_dataset(self, request: Request, owner: str) -> Response:
        body = require_object(request.json(), "non_field_errors")
        dataset = self.create_dataset(owner, body)
        return json_response(201, self.dataset_json(dataset))

    def create_dataset(self, owner: str, body: Mapping[str, Any]) -> DatasetRecord:
        """Validate an ``add_dataset`` body and create the dataset (also used for seeding)."""
        name = check_name(body.get("name"), "dataset")
        fields = _validated_dataset_fields({k: v for k, v in body.items() if k != "name"})
        fields.setdefault("task_type", DEFAULT_TASK_TYPE)
        fields.setdefault("task_attributes", dict(DEFAULT_TASK_ATTRIBUTES))
        fields.setdefault("category", "other")
        return self.store.create_dataset(owner, name, fields)

    def get_dataset(self, request: Request, owner: str, name: str) -> Response:
        return json_response(200, self.dataset_json(self._dataset(owner, name)))

    def update_dataset(self, request: Request, owner: str, name: str) -> Response:
        dataset = self._dataset(owner, name)
        body = require_object(request.json(), "non_field_errors")
        if "name" in body and body["name"] != dataset.name:
            raise field_error("name", "Renaming a dataset is not supported by the emulator.")
        changes = _validated_dataset_fields({k: v for k, v in body.items() if k != "name"})
        return json_response(200, self.dataset_json(self.store.update_dataset(dataset, changes)))

    def delete_dataset(self, request: Request, owner: str, name: str) -> Response:
        self.store.delete_dataset(self._dataset(owner, name))
        return Response(204)

    # Labelsets -----------------------------------------------------------------------------

    def list_labelsets(self, request: Request, owner: str, name: str) -> Response:
        labelsets = self.store.list_labelsets(self._dataset(owner, name).id)
        return json_response(200, [labelset_json(ls) for ls in labelsets])

    def get_labelset(self, request: Request, owner: str, name: str, labelset: str) -> Response:
        record = self.store.get_labelset(self._dataset(owner, name).id, labelset)
        return json_response(200, labelset_json(record))

    def add_labelset(self, request: Request, owner: str, name: str) -> Response:
        dataset = self._dataset(owner, name)
        body = require_object(request.json(), "non_field_errors")
        labelset_name = check_name(body.get("name"), "labelset")
        description = body.get("description", "")
        if not isinstance(description, str):
            raise field_error("description", "Not a valid string.")
        record = self.store.add_labelset(dataset.id, labelset_name, description)
        return json_response(201, labelset_json(record))
