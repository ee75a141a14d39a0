"""Asset uploads: ``POST /assets/`` and the fake S3 bucket behind it (spec section 2.5).

``POST /assets/`` issues an upload slot with presigned form fields; the file then goes to
:data:`~prelabel.emulator.s3.UPLOAD_PATH` without an API key, and is served publicly under
:data:`~prelabel.emulator.s3.DOWNLOAD_PREFIX`. The S3 routes answer with S3's XML errors, not DRF
JSON, because that is what the SDK meets in production.
"""

from __future__ import annotations

from prelabel.emulator import s3
from prelabel.emulator.api.base import ApiBase
from prelabel.emulator.api.urls import asset_url
from prelabel.emulator.api.validation import require_object
from prelabel.emulator.store.records import NotFound
from prelabel.emulator.wire import Request, Response, field_error, json_response

_XML = "application/xml"


class AssetsApi(ApiBase):
    """Upload slots, the presigned POST target and the public download of uploaded bytes."""

    def create_asset(self, request: Request) -> Response:
        body = require_object(request.json(), "non_field_errors")
        filename = body.get("filename")
        if not isinstance(filename, str) or not filename:
            raise field_error("filename", "This field is required.")
        extension, content_type = s3.content_type_for(filename)
        key = self.store.create_asset(self.username, filename, extension, content_type)
        asset = self.store.get_asset(key)
        return json_response(
            201,
            {
                "uuid": asset.uuid,
                "filename": filename,
                "created_at": asset.created_at,
                "url": asset_url(key, request.base_url),
                "presignedPostFields": {
                    "url": request.base_url + s3.UPLOAD_PATH.lstrip("/"),
                    "fields": s3.presigned_fields(key, content_type, asset.created_at),
                },
            },
        )

    def s3_upload(self, request: Request) -> Response:
        """The presigned POST target: 204 and no body, as real S3 (spec section 2.5)."""
        try:
            parts = s3.parse_multipart(request.headers.get("content-type", ""), request.body)
        except s3.MultipartError as error:
            return Response(400, s3.s3_error("MalformedPOSTRequest", str(error)), _XML)
        fields = {part.name: part for part in parts}
        key_part, file_part = fields.get("key"), fields.get("file")
        if file_part is None or key_part is None:
            message = "The body of your POST request is not well-formed multipart/form-data."
            return Response(400, s3.s3_error("MalformedPOSTRequest", message), _XML)
        key = key_part.data.decode("utf-8", errors="replace")
        try:
            self.store.store_asset_data(key, file_part.data)
        except NotFound:
            return Response(403, s3.s3_error("AccessDenied", "Invalid according to Policy"), _XML)
        return Response(204)

    def s3_download(self, request: Request, key: str) -> Response:
        try:
            asset = self.store.get_asset(key)
        except NotFound:
            asset = None
        if asset is None or asset.data is None:
            message = "The specified key does not exist."
            return Response(404, s3.s3_error("NoSuchKey", message), _XML)
        return Response(200, asset.data, asset.content_type)
