"""The sample resource: ``/datasets/{owner}/{name}/samples``, ``samples_bulk``, ``/samples/{uuid}``.

A listing validates every filter ``get_samples`` can send and hands the page to the store as one
:class:`~prelabel.emulator.store.records.SampleQuery`; with ``labelset`` each sample carries its
label in that labelset, in summary form unless ``include_full_label`` asks for all of it.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Sequence
from typing import Any

from prelabel.emulator.api.base import DEFAULT_TASK_TYPE, LABEL_STATUSES, ApiBase, task_type_of
from prelabel.emulator.api.labels import label_json, label_summary
from prelabel.emulator.api.shapes import check_sample_attributes
from prelabel.emulator.api.urls import local_urls, portable_urls, signed_urls
from prelabel.emulator.api.validation import check_page, page_number, per_page, require_object
from prelabel.emulator.store.records import (
    GROUND_TRUTH,
    DatasetRecord,
    LabelRecord,
    NewSample,
    SampleQuery,
    SampleRecord,
)
from prelabel.emulator.store.samples import SORT_COLUMNS
from prelabel.emulator.wire import ApiError, Request, Response, field_error, json_response

# What ``PATCH /samples/{uuid}`` changes: fields validated as a whole sample (the current values
# fill in those not sent), and assignments stored as sent.
_UPDATABLE = ("name", "attributes", "metadata", "priority", "readme")
_ASSIGNMENTS = ("assigned_labeler", "assigned_reviewer")


def sample_json(
    sample: SampleRecord,
    base_url: str,
    label: LabelRecord | None = None,
    label_form: str | None = None,
    task_type: str = DEFAULT_TASK_TYPE,
) -> dict[str, Any]:
    """A sample; ``label_form`` ``"summary"``/``"full"`` adds ``label`` (``null`` if none)."""
    data: dict[str, Any] = {
        "uuid": sample.uuid,
        "name": sample.name,
        "attributes": local_urls(sample.attributes, base_url),
        "metadata": sample.metadata,
        "created_at": sample.created_at,
        "created_by": sample.created_by,
        "updated_at": sample.updated_at,
        "readme": sample.readme,
        "assigned_labeler": sample.assigned_labeler,
        "assigned_reviewer": sample.assigned_reviewer,
        "priority": sample.priority,
        "dataset_full_name": sample.dataset_full_name,
    }
    if label_form == "summary":
        data["label"] = None if label is None else label_summary(label)
    elif label_form == "full":
        data["label"] = None if label is None else label_json(label, task_type, base_url)
    return data


def _new_sample(body: Any) -> NewSample:
    body = require_object(body, "non_field_errors")
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise field_error("name", "This field is required.")
    attributes = require_object(body.get("attributes"), "attributes")
    metadata = body.get("metadata") or {}
    require_object(metadata, "metadata")
    priority = body.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int | float):
        raise field_error("priority", "A valid number is required.")
    readme = body.get("readme") or ""
    return NewSample(
        name=name,
        attributes=attributes,
        metadata=metadata,
        priority=float(priority),
        readme=str(readme),
        assigned_labeler=body.get("assigned_labeler"),
        assigned_reviewer=body.get("assigned_reviewer"),
    )


class SamplesApi(ApiBase):
    """Adding (one or in bulk), listing, reading, updating and deleting samples."""

    def insert_samples(
        self,
        dataset: DatasetRecord,
        samples: Sequence[NewSample],
        base_url: str,
        existing_ok: bool = False,
    ) -> list[SampleRecord]:
        """Store samples with host-free asset URLs (also used for seeding)."""
        for sample in samples:
            check_sample_attributes(task_type_of(dataset), sample.attributes)
        portable = [
            dataclasses.replace(s, attributes=portable_urls(s.attributes, base_url))
            for s in samples
        ]
        return self.store.add_samples(dataset.id, portable, self.username, existing_ok)

    def add_sample(self, request: Request, owner: str, name: str) -> Response:
        dataset = self._dataset(owner, name)
        sample = _new_sample(request.json())
        [record] = self.insert_samples(dataset, [sample], request.base_url)
        data = sample_json(record, request.base_url)
        self.emit("sample.created", dataset.full_name, data)
        return json_response(201, data)

    def add_samples(self, request: Request, owner: str, name: str) -> Response:
        dataset = self._dataset(owner, name)
        body = request.json()
        if not isinstance(body, list):
            raise ApiError(400, {"non_field_errors": ["Expected a list of items."]})
        samples = [_new_sample(item) for item in body]
        records = self.insert_samples(dataset, samples, request.base_url, existing_ok=True)
        data = [sample_json(r, request.base_url) for r in records]
        for item in data:
            self.emit("sample.created", dataset.full_name, item)
        return json_response(201, data)

    def list_samples(self, request: Request, owner: str, name: str) -> Response:
        dataset = self._dataset(owner, name)
        query = request.query
        page, count = page_number(query), per_page(query, 1000)
        labelset = query.get("labelset")
        if labelset is not None:
            self.store.get_labelset(dataset.id, labelset)
        metadata = []
        for item in filter(None, query.get("filters", "").split(",")):
            key, colon, value = item.partition(":")
            if not colon or not key:
                raise field_error("filters", f"Expected 'key:value', got {item!r}.")
            metadata.append((key, value))
        statuses = tuple(filter(None, query.get("label_status", "").split(",")))
        for status in statuses:
            if status not in LABEL_STATUSES:
                raise field_error("label_status", f'"{status}" is not a valid choice.')
        sort = query.get("sort", "name")
        descending = sort.startswith("-")
        sort = sort.removeprefix("-")
        if sort not in SORT_COLUMNS:
            raise field_error("sort", f'"{sort}" is not a valid sort field.')
        rows = self.store.list_samples(
            SampleQuery(
                dataset_id=dataset.id,
                labelset=labelset or GROUND_TRUTH,
                name_contains=query.get("name__contains") or None,
                metadata=tuple(metadata),
                label_statuses=statuses,
                sort=sort,
                descending=descending,
                offset=(page - 1) * count,
                limit=count,
            )
        )
        check_page(rows, page)
        form = None
        if labelset is not None:
            form = "full" if query.get("include_full_label") in {"1", "true", "True"} else "summary"
        task_type = task_type_of(dataset)
        return json_response(
            200,
            [
                sample_json(sample, request.base_url, label, form, task_type)
                for sample, label in rows
            ],
        )

    def get_sample(self, request: Request, uuid: str) -> Response:
        query = dict(request.query)
        labelset = query.get("labelset")
        if labelset is not None and "?" in labelset:
            # SDK quirk: labelset + include_signed_url builds "?labelset=x?include_signed_urls=1".
            labelset, _, rest = labelset.partition("?")
            query.update(urllib.parse.parse_qsl(rest, keep_blank_values=True))
        sample = self.store.get_sample(uuid)
        if labelset is None:
            data = sample_json(sample, request.base_url)
        else:
            dataset = self._dataset_of(sample)
            self.store.get_labelset(dataset.id, labelset)
            label = self.store.get_label(uuid, labelset)
            data = sample_json(sample, request.base_url, label, "full", task_type_of(dataset))
        if query.get("include_signed_urls") == "1" and self.url_signer is not None:
            data["attributes"] = signed_urls(data["attributes"], self.url_signer)
        return json_response(200, data)

    def update_sample(self, request: Request, uuid: str) -> Response:
        body = require_object(request.json(), "non_field_errors")
        current = self.store.get_sample(uuid)
        merged = _new_sample({key: body.get(key, getattr(current, key)) for key in _UPDATABLE})
        changes: dict[str, Any] = {key: getattr(merged, key) for key in _UPDATABLE if key in body}
        if "attributes" in changes:
            check_sample_attributes(task_type_of(self._dataset_of(current)), merged.attributes)
            changes["attributes"] = portable_urls(changes["attributes"], request.base_url)
        for key in _ASSIGNMENTS:
            if key in body:
                changes[key] = body[key]
        record = self.store.update_sample(uuid, changes)
        return json_response(200, sample_json(record, request.base_url))

    def delete_sample(self, request: Request, uuid: str) -> Response:
        self.store.delete_sample(uuid)
        return Response(204)
