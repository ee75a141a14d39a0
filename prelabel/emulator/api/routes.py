"""The route table of the emulated Segments.ai API, and :class:`SegmentsApi` that serves it.

Every path the SDK calls maps to one handler of the resource mixins; routes are tried in order
(:func:`~prelabel.emulator.wire.resolve`), and only the two S3 routes go without an API key, as
a presigned upload and a public asset URL do in production.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prelabel.emulator import s3
from prelabel.emulator.api.assets import AssetsApi
from prelabel.emulator.api.datasets import DatasetsApi
from prelabel.emulator.api.labels import LabelsApi
from prelabel.emulator.api.samples import SamplesApi
from prelabel.emulator.api.users import UsersApi
from prelabel.emulator.wire import Response, Route, resolve, route


@dataclass
class SegmentsApi(UsersApi, DatasetsApi, SamplesApi, LabelsApi, AssetsApi):
    """The REST resources of one emulated Segments.ai account, routed.

    ``username`` is the user the API key belongs to; datasets created through
    ``/organizations/{org}/datasets/`` (or seeded with another owner) belong to that owner and are
    all accessible with the key, as for an organization member.
    """

    routes: list[Route] = field(init=False)

    def __post_init__(self) -> None:
        self.routes = [
            route("GET", "/api_status", self.api_status),
            route("GET", "/user", self.get_current_user),
            route("GET", "/users/{username}", self.get_user),
            route("GET", "/user/datasets", self.list_own_datasets),
            route("POST", "/user/datasets", self.add_own_dataset),
            route("GET", "/users/{username}/datasets", self.list_user_datasets),
            route("POST", "/organizations/{org}/datasets", self.add_org_dataset),
            route("GET", "/datasets/{owner}/{name}", self.get_dataset),
            route("PATCH", "/datasets/{owner}/{name}", self.update_dataset),
            route("DELETE", "/datasets/{owner}/{name}", self.delete_dataset),
            route("GET", "/datasets/{owner}/{name}/labelsets", self.list_labelsets),
            route("POST", "/datasets/{owner}/{name}/labelsets", self.add_labelset),
            route("GET", "/datasets/{owner}/{name}/labelsets/{labelset}", self.get_labelset),
            route("GET", "/datasets/{owner}/{name}/samples", self.list_samples),
            route("POST", "/datasets/{owner}/{name}/samples", self.add_sample),
            route("POST", "/datasets/{owner}/{name}/samples_bulk", self.add_samples),
            route("GET", "/samples/{uuid}", self.get_sample),
            route("PATCH", "/samples/{uuid}", self.update_sample),
            route("DELETE", "/samples/{uuid}", self.delete_sample),
            route("GET", "/labels/{uuid}/{labelset}", self.get_label),
            route("PUT", "/labels/{uuid}/{labelset}", self.put_label),
            route("PATCH", "/labels/{uuid}/{labelset}", self.patch_label),
            route("DELETE", "/labels/{uuid}/{labelset}", self.delete_label),
            route("POST", "/assets", self.create_asset),
            route("POST", s3.UPLOAD_PATH.rstrip("/"), self.s3_upload, auth=False),
            route("GET", s3.DOWNLOAD_PREFIX + "{key:path}", self.s3_download, auth=False),
        ]

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]] | Response:
        """The route and its decoded path parameters, or the 404/405 a DRF server answers."""
        return resolve(self.routes, method, path)
