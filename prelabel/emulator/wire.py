"""The HTTP wire types every layer of the emulator shares: requests, responses, errors, routes.

They sit below everything else so the HTTP server, the Segments resources (:mod:`.api`) and the
``/_emulator/`` side channel (:mod:`.control`) can all speak them without importing each other.
Nothing here touches a socket: a :class:`Request` is already read off the wire, a
:class:`Response` is not yet written to it. Error bodies are DRF-style (``{"detail": ...}`` or
``{field: [message]}``), because the SDK classifies errors by substrings of the body.
"""

from __future__ import annotations

import gzip
import json
import re
import urllib.parse
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


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


def field_error(name: str, message: str) -> ApiError:
    """DRF's 400 for one invalid field: ``{name: [message]}``."""
    return ApiError(400, {name: [message]})


def decoded(request: Request) -> Request:
    """The request with a gzip body inflated (the SDK gzips sample and label writes)."""
    if request.headers.get("content-encoding", "").lower() != "gzip":
        return request
    try:
        body = gzip.decompress(request.body)
    except (OSError, EOFError, zlib.error) as error:
        raise ApiError(400, {"detail": f"Malformed gzip body: {error}"}) from error
    return Request(
        request.method, request.path, request.query, request.headers, body, request.base_url
    )


Handler = Callable[..., Response]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    auth: bool = True


def route(method: str, template: str, handler: Handler, auth: bool = True) -> Route:
    """``/datasets/{owner}/{name}`` -> a regex with one named group per path segment;
    ``{key:path}`` matches the rest of the path, slashes included (S3 keys)."""
    regex = re.sub(r"\{(\w+):path\}", r"(?P<\1>.+)", template)
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", regex)
    return Route(method, re.compile(f"^{regex}$"), handler, auth)


def resolve(
    routes: Sequence[Route], method: str, path: str
) -> tuple[Route, dict[str, str]] | Response:
    """The route and its decoded path parameters, or the 404/405 a DRF server answers."""
    path = path.rstrip("/") or "/"
    allowed = []
    for candidate in routes:
        match = candidate.pattern.match(path)
        if match is None:
            continue
        if candidate.method != method:
            allowed.append(candidate.method)
            continue
        params = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
        return candidate, params
    if allowed:
        return detail_response(405, f'Method "{method}" not allowed.')
    return detail_response(404, "Not found.")
