"""The Segments.ai REST resources: routing, request validation and the JSON wire format.

This module turns an already-read HTTP request (:class:`Request`) into a :class:`Response`; it
never touches sockets, so the server module can own timing, faults and connection handling.
Shapes and status codes follow ``shared/segments-api.md``: DRF-style ``{"detail": ...}`` error
bodies (the SDK classifies errors by substrings of the body), bare JSON arrays for lists,
``404 {"detail": "Invalid page."}`` past the last page, and every field the SDK's pydantic models
require.

Asset URLs are stored host-independent (see :func:`portable_urls`): a SQLite-backed emulator
restarted on another port still serves working image and bitmap URLs.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prelabel.emulator import s3
from prelabel.emulator.store import (
    GROUND_TRUTH,
    SORT_COLUMNS,
    UNLABELED,
    DatasetRecord,
    LabelRecord,
    LabelsetRecord,
    NewSample,
    NotFound,
    SampleQuery,
    SampleRecord,
    Store,
    now_iso,
)

logger = logging.getLogger(__name__)

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
BITMAP_TASK_TYPES = frozenset({"segmentation-bitmap", "segmentation-bitmap-highres"})
DATASET_CATEGORIES = frozenset(
    {"street_scenery", "garden", "agriculture", "satellite", "people", "medical", "fruit", "other"}
)
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
# What ``PUT /labels/...`` accepts per the docs (VERIFIED only where the dataset enables it).
WRITABLE_STATUSES = frozenset({"LABELED", "REVIEWED", "REJECTED", "PRELABELED", "SKIPPED"})
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
_NAME_PATTERN = re.compile(r"^[\w.-]+$")
_PORTABLE_PREFIX = "emulator-asset:///"
NOT_PROVIDED = "Authentication credentials were not provided."
INVALID_KEY = "Invalid token."


@dataclass(frozen=True)
class Request:
    """An HTTP request as read off the wire (body already gunzipped)."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    base_url: str  # "http://<Host header>/", where clients reach this server

    def json(self) -> Any:
        """The body as JSON; a DRF-style 400 when it is not."""
        try:
            return json.loads(self.body or b"null")
        except ValueError as error:
            raise ApiError(400, {"detail": f"JSON parse error - {error}"}) from error


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


def json_response(status: int, data: Any, headers: Sequence[tuple[str, str]] = ()) -> Response:
    body = json.dumps(data, separators=(",", ":")).encode()
    return Response(status, body, "application/json", tuple(headers))


def detail_response(status: int, message: str) -> Response:
    return json_response(status, {"detail": message})


class ApiError(Exception):
    """Abort a request with a JSON error body (``{"detail": ...}`` or DRF field errors)."""

    def __init__(self, status: int, body: Mapping[str, Any]) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = dict(body)


def _field_error(name: str, message: str) -> ApiError:
    return ApiError(400, {name: [message]})


Handler = Callable[..., Response]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    auth: bool = True


def _route(method: str, template: str, handler: Handler, auth: bool = True) -> Route:
    """``/datasets/{owner}/{name}`` -> a regex with one named group per path segment;
    ``{key:path}`` matches the rest of the path, slashes included (S3 keys)."""
    regex = re.sub(r"\{(\w+):path\}", r"(?P<\1>.+)", template)
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", regex)
    return Route(method, re.compile(f"^{regex}$"), handler, auth)


def portable_urls(value: Any, base_url: str) -> Any:
    """Replace this server's asset URLs by a host-free placeholder before storing."""
    prefix = base_url + s3.DOWNLOAD_PREFIX.lstrip("/")
    if isinstance(value, str):
        return _PORTABLE_PREFIX + value[len(prefix) :] if value.startswith(prefix) else value
    if isinstance(value, dict):
        return {key: portable_urls(item, base_url) for key, item in value.items()}
    if isinstance(value, list):
        return [portable_urls(item, base_url) for item in value]
    return value


def local_urls(value: Any, base_url: str) -> Any:
    """Inverse of :func:`portable_urls` for the host the client used."""
    if isinstance(value, str):
        if value.startswith(_PORTABLE_PREFIX):
            prefix = base_url + s3.DOWNLOAD_PREFIX.lstrip("/")
            return prefix + value[len(_PORTABLE_PREFIX) :]
        return value
    if isinstance(value, dict):
        return {key: local_urls(item, base_url) for key, item in value.items()}
    if isinstance(value, list):
        return [local_urls(item, base_url) for item in value]
    return value


def _page_number(query: Mapping[str, str]) -> int:
    try:
        page = int(query.get("page", "1"))
    except ValueError:
        page = 0
    if page < 1:
        raise ApiError(404, {"detail": "Invalid page."})
    return page


def _per_page(query: Mapping[str, str], default: int) -> int:
    raw = query.get("per_page")
    if raw is None:
        return default
    try:
        per_page = int(raw)
    except ValueError:
        per_page = 0
    if per_page < 1:
        raise _field_error("per_page", "A valid positive integer is required.")
    return per_page


def _check_page(items: Sequence[Any], page: int) -> None:
    """DRF pagination: page 1 may be empty, any later empty page does not exist."""
    if page > 1 and not items:
        raise ApiError(404, {"detail": "Invalid page."})


def _require_object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _field_error(name, "Expected a dictionary of items.")
    return value


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _NAME_PATTERN.match(value):
        raise _field_error(
            "name", f"Enter a valid {what} name: letters, numbers, '_', '-' or '.' only."
        )
    return value


def _check_bitmap_attributes(attributes: Any) -> None:
    """The server-side shape check of a segmentation-bitmap label (spec section 5)."""
    attributes = _require_object(attributes, "attributes")
    annotations = attributes.get("annotations")
    if not isinstance(annotations, list):
        raise _field_error("attributes", "'annotations' must be a list.")
    seen: set[int] = set()
    for annotation in annotations:
        if not isinstance(annotation, dict):
            raise _field_error("attributes", "Each annotation must be an object.")
        object_id, category_id = annotation.get("id"), annotation.get("category_id")
        if type(object_id) is not int or not 0 < object_id < 2**24:
            raise _field_error("attributes", f"Annotation id {object_id!r} must be in 1..2^24-1.")
        if type(category_id) is not int:
            raise _field_error("attributes", f"Annotation category_id {category_id!r} is invalid.")
        if object_id in seen:
            raise _field_error("attributes", f"Annotation id {object_id} is used twice.")
        seen.add(object_id)
    bitmap = attributes.get("segmentation_bitmap")
    if not isinstance(bitmap, dict) or not isinstance(bitmap.get("url"), str):
        raise _field_error("attributes", "'segmentation_bitmap' must be an object with a 'url'.")


def _score(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _field_error("score", "A valid number is required.")
    return float(value)


@dataclass
class SegmentsApi:
    """The REST resources of one emulated Segments.ai account.

    ``username`` is the user the API key belongs to; datasets created through
    ``/organizations/{org}/datasets/`` (or seeded with another owner) belong to that owner and are
    all accessible with the key, as for an organization member.
    """

    store: Store
    api_key: str
    username: str
    user_created_at: str = field(default_factory=now_iso)
    #: Called with (event_type, dataset, object) after each write that Segments.ai announces
    #: by webhook (``prelabel.emulator.webhooks``); None: no webhooks.
    on_event: Callable[[str, str, dict[str, Any]], object] | None = None
    routes: list[Route] = field(init=False)

    def __post_init__(self) -> None:
        self.routes = [
            _route("GET", "/api_status", self.api_status),
            _route("GET", "/user", self.get_current_user),
            _route("GET", "/users/{username}", self.get_user),
            _route("GET", "/user/datasets", self.list_own_datasets),
            _route("POST", "/user/datasets", self.add_own_dataset),
            _route("GET", "/users/{username}/datasets", self.list_user_datasets),
            _route("POST", "/organizations/{org}/datasets", self.add_org_dataset),
            _route("GET", "/datasets/{owner}/{name}", self.get_dataset),
            _route("PATCH", "/datasets/{owner}/{name}", self.update_dataset),
            _route("DELETE", "/datasets/{owner}/{name}", self.delete_dataset),
            _route("GET", "/datasets/{owner}/{name}/labelsets", self.list_labelsets),
            _route("POST", "/datasets/{owner}/{name}/labelsets", self.add_labelset),
            _route("GET", "/datasets/{owner}/{name}/labelsets/{labelset}", self.get_labelset),
            _route("GET", "/datasets/{owner}/{name}/samples", self.list_samples),
            _route("POST", "/datasets/{owner}/{name}/samples", self.add_sample),
            _route("POST", "/datasets/{owner}/{name}/samples_bulk", self.add_samples),
            _route("GET", "/samples/{uuid}", self.get_sample),
            _route("PATCH", "/samples/{uuid}", self.update_sample),
            _route("DELETE", "/samples/{uuid}", self.delete_sample),
            _route("GET", "/labels/{uuid}/{labelset}", self.get_label),
            _route("PUT", "/labels/{uuid}/{labelset}", self.put_label),
            _route("PATCH", "/labels/{uuid}/{labelset}", self.patch_label),
            _route("DELETE", "/labels/{uuid}/{labelset}", self.delete_label),
            _route("POST", "/assets", self.create_asset),
            _route("POST", s3.UPLOAD_PATH.rstrip("/"), self.s3_upload, auth=False),
            _route("GET", s3.DOWNLOAD_PREFIX + "{key:path}", self.s3_download, auth=False),
        ]

    # Dispatch ------------------------------------------------------------------------------

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]] | Response:
        """The route and its decoded path parameters, or the 404/405 a DRF server answers."""
        path = path.rstrip("/") or "/"
        allowed = []
        for route in self.routes:
            match = route.pattern.match(path)
            if match is None:
                continue
            if route.method != method:
                allowed.append(route.method)
                continue
            params = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
            return route, params
        if allowed:
            return detail_response(405, f'Method "{method}" not allowed.')
        return detail_response(404, "Not found.")

    def authenticate(self, headers: Mapping[str, str]) -> Response | None:
        """``None`` if the ``APIKey`` header carries the right key, else DRF's 401.

        A missing header gets the text the SDK maps to ``AuthenticationError``; a wrong key gets
        "Invalid token." (an ``AuthenticationError`` at client construction, a plain
        ``NetworkError`` afterwards, exactly as the SDK treats any other 401 body).
        """
        header = headers.get("authorization")
        challenge = (("WWW-Authenticate", "APIKey"),)
        if not header:
            return json_response(401, {"detail": NOT_PROVIDED}, challenge)
        scheme, _, key = header.partition(" ")
        if scheme != "APIKey" or key.strip() != self.api_key:
            return json_response(401, {"detail": INVALID_KEY}, challenge)
        return None

    # User ----------------------------------------------------------------------------------

    def api_status(self, request: Request) -> Response:
        return json_response(200, {})

    def _user_json(self, username: str) -> dict[str, Any]:
        return {
            "username": username,
            "email": f"{username}@example.com" if username == self.username else None,
            "created_at": self.user_created_at,
            "is_organization": username != self.username,
        }

    def get_current_user(self, request: Request) -> Response:
        return json_response(200, self._user_json(self.username))

    def get_user(self, request: Request, username: str) -> Response:
        if username != self.username and username not in self.store.owners():
            raise NotFound("Not found.")
        return json_response(200, self._user_json(username))

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
            "task_type": fields.get("task_type", "segmentation-bitmap"),
            "task_attributes": fields.get("task_attributes", DEFAULT_TASK_ATTRIBUTES),
            "label_stats": label_stats,
            "samples_count": counts["TOTAL"],
            "collaborators_count": 1,
            "labelsets": [self._labelset_json(ls) for ls in self.store.list_labelsets(dataset.id)],
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

    def _dataset(self, owner: str, name: str) -> DatasetRecord:
        return self.store.get_dataset(owner, name)

    def _list_datasets(self, request: Request, owner: str) -> Response:
        page, per_page = _page_number(request.query), _per_page(request.query, 1000)
        datasets = self.store.list_datasets(owner, (page - 1) * per_page, per_page)
        _check_page(datasets, page)
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
        body = _require_object(request.json(), "non_field_errors")
        dataset = self.create_dataset(owner, body)
        return json_response(201, self.dataset_json(dataset))

    def create_dataset(self, owner: str, body: Mapping[str, Any]) -> DatasetRecord:
        """Validate an ``add_dataset`` body and create the dataset (also used for seeding)."""
        name = _check_name(body.get("name"), "dataset")
        fields = self._validated_dataset_fields({k: v for k, v in body.items() if k != "name"})
        fields.setdefault("task_type", "segmentation-bitmap")
        fields.setdefault("task_attributes", dict(DEFAULT_TASK_ATTRIBUTES))
        fields.setdefault("category", "other")
        return self.store.create_dataset(owner, name, fields)

    @staticmethod
    def _validated_dataset_fields(fields: dict[str, Any]) -> dict[str, Any]:
        if "task_type" in fields and fields["task_type"] not in TASK_TYPES:
            raise _field_error("task_type", f'"{fields["task_type"]}" is not a valid choice.')
        if "category" in fields and fields["category"] not in DATASET_CATEGORIES:
            raise _field_error("category", f'"{fields["category"]}" is not a valid choice.')
        if "task_attributes" in fields:
            attributes = _require_object(fields["task_attributes"], "task_attributes")
            categories = attributes.get("categories", [])
            if not isinstance(categories, list) or not all(
                isinstance(c, dict) and type(c.get("id")) is int and isinstance(c.get("name"), str)
                for c in categories
            ):
                raise _field_error("task_attributes", "Each category needs an int id and a name.")
        if "metadata" in fields and fields["metadata"] is not None:
            _require_object(fields["metadata"], "metadata")
        return fields

    def get_dataset(self, request: Request, owner: str, name: str) -> Response:
        return json_response(200, self.dataset_json(self._dataset(owner, name)))

    def update_dataset(self, request: Request, owner: str, name: str) -> Response:
        dataset = self._dataset(owner, name)
        body = _require_object(request.json(), "non_field_errors")
        if "name" in body and body["name"] != dataset.name:
            raise _field_error("name", "Renaming a dataset is not supported by the emulator.")
        changes = self._validated_dataset_fields({k: v for k, v in body.items() if k != "name"})
        return json_response(200, self.dataset_json(self.store.update_dataset(dataset, changes)))

    def delete_dataset(self, request: Request, owner: str, name: str) -> Response:
        self.store.delete_dataset(self._dataset(owner, name))
        return Response(204)

    # Labelsets -----------------------------------------------------------------------------

    @staticmethod
    def _labelset_json(labelset: LabelsetRecord) -> dict[str, Any]:
        return {
            "name": labelset.name,
            "description": labelset.description,
            "is_groundtruth": labelset.is_groundtruth,
            "created_at": labelset.created_at,
        }

    def list_labelsets(self, request: Request, owner: str, name: str) -> Response:
        labelsets = self.store.list_labelsets(self._dataset(owner, name).id)
        return json_response(200, [self._labelset_json(ls) for ls in labelsets])

    def get_labelset(self, request: Request, owner: str, name: str, labelset: str) -> Response:
        record = self.store.get_labelset(self._dataset(owner, name).id, labelset)
        return json_response(200, self._labelset_json(record))

    def add_labelset(self, request: Request, owner: str, name: str) -> Response:
        dataset = self._dataset(owner, name)
        body = _require_object(request.json(), "non_field_errors")
        labelset_name = _check_name(body.get("name"), "labelset")
        description = body.get("description", "")
        if not isinstance(description, str):
            raise _field_error("description", "Not a valid string.")
        record = self.store.add_labelset(dataset.id, labelset_name, description)
        return json_response(201, self._labelset_json(record))

    # Samples -------------------------------------------------------------------------------

    def sample_json(
        self,
        sample: SampleRecord,
        base_url: str,
        label: LabelRecord | None = None,
        label_form: str | None = None,
        task_type: str = "segmentation-bitmap",
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
            data["label"] = None if label is None else self._label_summary(label)
        elif label_form == "full":
            data["label"] = None if label is None else self.label_json(label, task_type, base_url)
        return data

    @staticmethod
    def _new_sample(body: Any) -> NewSample:
        body = _require_object(body, "non_field_errors")
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise _field_error("name", "This field is required.")
        attributes = _require_object(body.get("attributes"), "attributes")
        metadata = body.get("metadata") or {}
        _require_object(metadata, "metadata")
        priority = body.get("priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int | float):
            raise _field_error("priority", "A valid number is required.")
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

    def insert_samples(
        self,
        dataset: DatasetRecord,
        samples: Sequence[NewSample],
        base_url: str,
        existing_ok: bool = False,
    ) -> list[SampleRecord]:
        """Store samples with host-free asset URLs (also used for seeding)."""
        portable = [
            NewSample(
                name=s.name,
                attributes=portable_urls(s.attributes, base_url),
                metadata=s.metadata,
                priority=s.priority,
                readme=s.readme,
                assigned_labeler=s.assigned_labeler,
                assigned_reviewer=s.assigned_reviewer,
            )
            for s in samples
        ]
        return self.store.add_samples(dataset.id, portable, self.username, existing_ok)

    def add_sample(self, request: Request, owner: str, name: str) -> Response:
        dataset = self._dataset(owner, name)
        sample = self._new_sample(request.json())
        [record] = self.insert_samples(dataset, [sample], request.base_url)
        data = self.sample_json(record, request.base_url)
        self.emit("sample.created", dataset.full_name, data)
        return json_response(201, data)

    def add_samples(self, request: Request, owner: str, name: str) -> Response:
        dataset = self._dataset(owner, name)
        body = request.json()
        if not isinstance(body, list):
            raise ApiError(400, {"non_field_errors": ["Expected a list of items."]})
        samples = [self._new_sample(item) for item in body]
        records = self.insert_samples(dataset, samples, request.base_url, existing_ok=True)
        data = [self.sample_json(r, request.base_url) for r in records]
        for item in data:
            self.emit("sample.created", dataset.full_name, item)
        return json_response(201, data)

    def list_samples(self, request: Request, owner: str, name: str) -> Response:
        dataset = self._dataset(owner, name)
        query = request.query
        page, per_page = _page_number(query), _per_page(query, 1000)
        labelset = query.get("labelset")
        if labelset is not None:
            self.store.get_labelset(dataset.id, labelset)
        metadata = []
        for item in filter(None, query.get("filters", "").split(",")):
            key, colon, value = item.partition(":")
            if not colon or not key:
                raise _field_error("filters", f"Expected 'key:value', got {item!r}.")
            metadata.append((key, value))
        statuses = tuple(filter(None, query.get("label_status", "").split(",")))
        for status in statuses:
            if status not in LABEL_STATUSES:
                raise _field_error("label_status", f'"{status}" is not a valid choice.')
        sort = query.get("sort", "name")
        descending = sort.startswith("-")
        sort = sort.removeprefix("-")
        if sort not in SORT_COLUMNS:
            raise _field_error("sort", f'"{sort}" is not a valid sort field.')
        rows = self.store.list_samples(
            SampleQuery(
                dataset_id=dataset.id,
                labelset=labelset or GROUND_TRUTH,
                name_contains=query.get("name__contains") or None,
                metadata=tuple(metadata),
                label_statuses=statuses,
                sort=sort,
                descending=descending,
                offset=(page - 1) * per_page,
                limit=per_page,
            )
        )
        _check_page(rows, page)
        form = None
        if labelset is not None:
            form = "full" if query.get("include_full_label") in {"1", "true", "True"} else "summary"
        task_type = dataset.fields.get("task_type", "segmentation-bitmap")
        return json_response(
            200,
            [
                self.sample_json(sample, request.base_url, label, form, task_type)
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
            return json_response(200, self.sample_json(sample, request.base_url))
        dataset = self._dataset(*sample.dataset_full_name.split("/", 1))
        self.store.get_labelset(dataset.id, labelset)
        label = self.store.get_label(uuid, labelset)
        task_type = dataset.fields.get("task_type", "segmentation-bitmap")
        data = self.sample_json(sample, request.base_url, label, "full", task_type)
        return json_response(200, data)

    def update_sample(self, request: Request, uuid: str) -> Response:
        body = _require_object(request.json(), "non_field_errors")
        current = self.store.get_sample(uuid)
        merged = self._new_sample(
            {
                "name": body.get("name", current.name),
                "attributes": body.get("attributes", current.attributes),
                "metadata": body.get("metadata", current.metadata),
                "priority": body.get("priority", current.priority),
                "readme": body.get("readme", current.readme),
            }
        )
        changes: dict[str, Any] = {
            key: getattr(merged, key)
            for key in ("name", "attributes", "metadata", "priority", "readme")
            if key in body
        }
        if "attributes" in changes:
            changes["attributes"] = portable_urls(changes["attributes"], request.base_url)
        for key in ("assigned_labeler", "assigned_reviewer"):
            if key in body:
                changes[key] = body[key]
        record = self.store.update_sample(uuid, changes)
        return json_response(200, self.sample_json(record, request.base_url))

    def delete_sample(self, request: Request, uuid: str) -> Response:
        self.store.delete_sample(uuid)
        return Response(204)

    # Labels --------------------------------------------------------------------------------

    def label_json(self, label: LabelRecord, task_type: str, base_url: str) -> dict[str, Any]:
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

    @staticmethod
    def _label_summary(label: LabelRecord) -> dict[str, Any]:
        return {
            "label_status": label.label_status,
            "score": label.score,
            "updated_at": label.updated_at,
            "created_by": label.created_by,
            "reviewed_by": label.reviewed_by,
        }

    def label_target(self, sample_uuid: str, labelset: str) -> DatasetRecord:
        """The dataset of the sample, after checking the labelset exists in it."""
        sample = self.store.get_sample(sample_uuid)
        dataset = self._dataset(*sample.dataset_full_name.split("/", 1))
        self.store.get_labelset(dataset.id, labelset)
        return dataset

    def _validated_label_changes(
        self, dataset: DatasetRecord, body: Mapping[str, Any], partial: bool
    ) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if "label_status" in body or not partial:
            status = body.get("label_status")
            writable = set(WRITABLE_STATUSES)
            if dataset.fields.get("enable_label_status_verified"):
                writable.add("VERIFIED")
            if status not in writable:
                raise _field_error("label_status", f'"{status}" is not a valid choice.')
            changes["label_status"] = status
        if "attributes" in body or not partial:
            attributes = body.get("attributes")
            if dataset.fields.get("task_type", "segmentation-bitmap") in BITMAP_TASK_TYPES:
                _check_bitmap_attributes(attributes)
            else:
                _require_object(attributes, "attributes")
            changes["attributes"] = attributes
        if "score" in body or not partial:
            changes["score"] = _score(body.get("score"))
        return changes

    def get_label(self, request: Request, uuid: str, labelset: str) -> Response:
        dataset = self.label_target(uuid, labelset)
        label = self.store.get_label(uuid, labelset)
        if label is None:
            raise NotFound("Not found.")
        task_type = dataset.fields.get("task_type", "segmentation-bitmap")
        return json_response(200, self.label_json(label, task_type, request.base_url))

    def put_label(self, request: Request, uuid: str, labelset: str) -> Response:
        dataset = self.label_target(uuid, labelset)
        body = _require_object(request.json(), "non_field_errors")
        changes = self._validated_label_changes(dataset, body, partial=False)
        label, created = self.store.put_label(
            uuid,
            labelset,
            changes["label_status"],
            portable_urls(changes["attributes"], request.base_url),
            changes["score"],
            by=self.username,
            count_write=True,
        )
        task_type = dataset.fields.get("task_type", "segmentation-bitmap")
        data = self.label_json(label, task_type, request.base_url)
        self.emit("label.updated", dataset.full_name, data)
        return json_response(201 if created else 200, data)

    def patch_label(self, request: Request, uuid: str, labelset: str) -> Response:
        dataset = self.label_target(uuid, labelset)
        body = _require_object(request.json(), "non_field_errors")
        changes = self._validated_label_changes(dataset, body, partial=True)
        if "attributes" in changes:
            changes["attributes"] = portable_urls(changes["attributes"], request.base_url)
        label = self.store.patch_label(uuid, labelset, changes, self.username, count_write=True)
        task_type = dataset.fields.get("task_type", "segmentation-bitmap")
        data = self.label_json(label, task_type, request.base_url)
        self.emit("label.updated", dataset.full_name, data)
        return json_response(200, data)

    def delete_label(self, request: Request, uuid: str, labelset: str) -> Response:
        dataset = self.label_target(uuid, labelset)
        self.store.delete_label(uuid, labelset)
        self.emit("label.deleted", dataset.full_name, {"sample_uuid": uuid, "labelset": labelset})
        return Response(204)

    def emit(self, event_type: str, dataset: str, obj: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(event_type, dataset, obj)

    # Assets --------------------------------------------------------------------------------

    def create_asset(self, request: Request) -> Response:
        body = _require_object(request.json(), "non_field_errors")
        filename = body.get("filename")
        if not isinstance(filename, str) or not filename:
            raise _field_error("filename", "This field is required.")
        extension, content_type = s3.content_type_for(filename)
        key = self.store.create_asset(self.username, filename, extension, content_type)
        asset = self.store.get_asset(key)
        return json_response(
            201,
            {
                "uuid": asset.uuid,
                "filename": filename,
                "created_at": asset.created_at,
                "url": self.asset_url(key, request.base_url),
                "presignedPostFields": {
                    "url": request.base_url + s3.UPLOAD_PATH.lstrip("/"),
                    "fields": s3.presigned_fields(key, content_type, asset.created_at),
                },
            },
        )

    @staticmethod
    def asset_url(key: str, base_url: str) -> str:
        return base_url + s3.DOWNLOAD_PREFIX.lstrip("/") + key

    def s3_upload(self, request: Request) -> Response:
        """The presigned POST target: 204 and no body, as real S3 (spec section 2.5)."""
        xml = "application/xml"
        try:
            parts = s3.parse_multipart(request.headers.get("content-type", ""), request.body)
        except s3.MultipartError as error:
            return Response(400, s3.s3_error("MalformedPOSTRequest", str(error)), xml)
        fields = {part.name: part for part in parts}
        key_part, file_part = fields.get("key"), fields.get("file")
        if file_part is None or key_part is None:
            message = "The body of your POST request is not well-formed multipart/form-data."
            return Response(400, s3.s3_error("MalformedPOSTRequest", message), xml)
        key = key_part.data.decode("utf-8", errors="replace")
        try:
            self.store.store_asset_data(key, file_part.data)
        except NotFound:
            return Response(403, s3.s3_error("AccessDenied", "Invalid according to Policy"), xml)
        return Response(204)

    def s3_download(self, request: Request, key: str) -> Response:
        try:
            asset = self.store.get_asset(key)
        except NotFound:
            asset = None
        if asset is None or asset.data is None:
            message = "The specified key does not exist."
            return Response(404, s3.s3_error("NoSuchKey", message), "application/xml")
        return Response(200, asset.data, asset.content_type)
