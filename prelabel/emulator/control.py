"""The ``/_emulator/`` side channel: introspection and fault control over HTTP, for tests.

The SDK never calls these paths. They exist so a test can drive an emulator it did not start in
its own process (``prelabel emulator`` in a subprocess): read the request log and write counters,
change faults at runtime, and edit a label the way a human annotator would. They need no API key,
are never logged, and are never subject to faults, so a test can always clear a fault it set.

Paths (all JSON):

- ``GET /_emulator/stats`` -> ``{"requests": int, "asset_uploads": int,
  "label_writes": [{"sample_uuid", "labelset", "count"}]}``
- ``GET /_emulator/requests`` -> ``[{"method", "path", "query", "status", "fault"}]``;
  ``DELETE`` clears the log.
- ``GET /_emulator/faults`` -> ``{"seed", "rules": [...]}``; ``POST``/``PUT`` with the same shape
  replaces the rules (``seed`` optional); ``DELETE`` removes them.
- ``GET /_emulator/webhooks`` -> ``{"pending": int, "deliveries": [{"message_id",
  "event_type", "dataset", "attempt", "duplicate", "status", "error", "seconds"}]}`` when the
  emulator sends webhooks (404 otherwise).
- ``PUT /_emulator/labels/{sample_uuid}/{labelset}/`` with ``{"label_status", "attributes"?,
  "score"?, "by"?}`` writes a label as a human would (not counted as an API write);
  ``label_status: "UNLABELED"`` deletes it.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any, Protocol

from prelabel.emulator.faults import FaultRule
from prelabel.emulator.requestlog import RequestRecord
from prelabel.emulator.webhooks import WebhookConfig, WebhookSender
from prelabel.emulator.wire import ApiError, Request, Response, detail_response, json_response

PREFIX = "/_emulator/"
_LABEL_PATH = re.compile(r"^/_emulator/labels/(?P<uuid>[^/]+)/(?P<labelset>[^/]+)$")


class Controlled(Protocol):
    """What the side channel needs from the emulator it controls (:class:`~.server.Emulator`).

    A protocol rather than the class itself, so this module depends only on what it uses, and
    the HTTP server (:mod:`.http_server`), which routes ``/_emulator/`` requests here, and the
    :class:`~.server.Emulator` that owns that server never form an import cycle with it.
    """

    @property
    def requests(self) -> list[RequestRecord]: ...

    def clear_requests(self) -> None: ...

    @property
    def faults(self) -> list[FaultRule]: ...

    @property
    def fault_seed(self) -> int: ...

    def set_faults(self, rules: Iterable[FaultRule], seed: int | None = None) -> None: ...

    def clear_faults(self) -> None: ...

    def asset_upload_count(self) -> int: ...

    def label_write_counts(self) -> dict[tuple[str, str], int]: ...

    @property
    def webhook_config(self) -> WebhookConfig | None: ...

    @property
    def webhooks(self) -> WebhookSender: ...

    def write_label(
        self,
        sample_uuid: str,
        labelset: str,
        attributes: dict[str, Any] | None,
        /,
        *,
        label_status: str = ...,
        score: float | None = ...,
        by: str = ...,
    ) -> dict[str, Any] | None: ...


def handle(emulator: Controlled, request: Request) -> Response:
    """Answer one side-channel request."""
    path = request.path.rstrip("/")
    method = request.method
    if path == "/_emulator/stats" and method == "GET":
        return json_response(200, _stats(emulator))
    if path == "/_emulator/requests":
        if method == "GET":
            return json_response(200, [asdict(record) for record in emulator.requests])
        if method == "DELETE":
            emulator.clear_requests()
            return Response(204)
    if path == "/_emulator/faults":
        if method == "GET":
            return json_response(200, _faults(emulator))
        if method in {"POST", "PUT"}:
            body = request.json()
            if not isinstance(body, dict) or not isinstance(body.get("rules", []), list):
                raise ApiError(400, {"detail": 'Expected {"rules": [...], "seed": int}.'})
            try:
                rules = [FaultRule.from_dict(rule) for rule in body.get("rules", [])]
            except (TypeError, ValueError) as error:
                raise ApiError(400, {"detail": f"Invalid fault rule: {error}"}) from error
            emulator.set_faults(rules, seed=body.get("seed"))
            return json_response(200, _faults(emulator))
        if method == "DELETE":
            emulator.clear_faults()
            return Response(204)
    if path == "/_emulator/webhooks" and method == "GET" and emulator.webhook_config:
        sender = emulator.webhooks
        deliveries = [asdict(delivery) for delivery in sender.deliveries]
        return json_response(200, {"pending": sender.pending, "deliveries": deliveries})
    match = _LABEL_PATH.match(path)
    if match is not None and method == "PUT":
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("label_status"), str):
            raise ApiError(400, {"detail": 'Expected {"label_status": ..., "attributes": ...}.'})
        sample_uuid = urllib.parse.unquote(match["uuid"])
        labelset = urllib.parse.unquote(match["labelset"])
        label = emulator.write_label(
            sample_uuid,
            labelset,
            body.get("attributes"),
            label_status=body["label_status"],
            score=body.get("score"),
            by=body.get("by", "human-annotator"),
        )
        return json_response(200, label)
    return detail_response(404, "Not found.")


def _stats(emulator: Controlled) -> dict[str, Any]:
    return {
        "requests": len(emulator.requests),
        "asset_uploads": emulator.asset_upload_count(),
        "label_writes": [
            {"sample_uuid": sample_uuid, "labelset": labelset, "count": count}
            for (sample_uuid, labelset), count in sorted(emulator.label_write_counts().items())
        ],
    }


def _faults(emulator: Controlled) -> dict[str, Any]:
    return {"seed": emulator.fault_seed, "rules": [rule.to_dict() for rule in emulator.faults]}
