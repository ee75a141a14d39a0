"""Segments.ai webhook deliveries: the Svix signature check and the events serve acts on.

Follows ``shared/segments-api.md`` section 11. A delivery is a JSON envelope (``event_type``,
``created_at``, ``dataset``, ``object``, ...) signed with the endpoint's ``whsec_`` secret
(Standard Webhooks v1: HMAC-SHA256 over ``"{id}.{timestamp}.{raw body}"``, a timestamp within 5
minutes). :class:`SignatureVerifier` wraps the ``svix`` library, which reads both the ``svix-*``
and the white-labelled ``webhook-*`` headers. Anything that fails, including what the library
raises outside its own error type (a signature header without a comma, a non-UTF-8 body), is a
:class:`Rejected` delivery.

Only identifiers are read from a verified payload (``object.uuid`` of a sample,
``object.sample_uuid`` and ``labelset`` of a label); the worker re-reads the sample through the
SDK, which also absorbs reordered or stale events. :func:`decide` turns an event into a
:class:`SampleTask` or the reason it is ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from svix.webhooks import Webhook

from prelabel.errors import ConfigError
from prelabel.segments.statuses import may_write

SAMPLE_CREATED: Final = "sample.created"
LABEL_DELETED: Final = "label.deleted"
LABEL_UPDATED: Final = "label.updated"
_PREFIX = "whsec_"

Trigger = Literal["sample.created", "label.deleted"]


class Rejected(Exception):
    """The delivery is not authentic (or not readable as one): answer 401 and do nothing."""


@dataclass(frozen=True)
class Event:
    """What serve reads from a verified envelope; every field may be missing."""

    event_type: str | None
    dataset: str | None
    sample_uuid: str | None
    labelset: str | None
    label_status: str | None
    created_at: str | None


@dataclass(frozen=True)
class SampleTask:
    """Work for the queue: pre-label (or re-check) one sample of a served dataset."""

    dataset: str
    sample_uuid: str
    trigger: Trigger
    message_id: str


@dataclass(frozen=True)
class Ignored:
    """A verified delivery serve acknowledges and does nothing with."""

    reason: str


class SignatureVerifier:
    """Checks deliveries against one endpoint secret (``whsec_<base64>``)."""

    def __init__(self, secret: str) -> None:
        check_secret(secret)
        self._hook = Webhook(secret)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str:
        """Return the message id of an authentic delivery; raise :class:`Rejected` otherwise.

        ``headers`` may use any case; ``svix-*`` wins over ``webhook-*`` as in the library.
        """
        lowered = {name.lower(): value for name, value in headers.items()}
        try:
            self._hook.verify(body, lowered)
        # svix raises WebhookVerificationError for what it checks, but a malformed signature
        # header escapes as ValueError and a non-UTF-8 body as UnicodeDecodeError (spec 11.5):
        # at this border every failure, whatever its type, means "not authentic".
        except Exception as exc:
            raise Rejected(_rejection_reason(exc)) from None
        message_id = lowered.get("svix-id") or lowered.get("webhook-id")
        if not message_id:  # the library checked it is present; this keeps mypy honest
            raise Rejected("missing message id")
        return message_id


def check_secret(secret: str) -> None:
    """Refuse a secret that cannot be a Svix signing secret.

    The library accepts any string and treats a non-base64 one as a different key, after which
    every delivery fails verification: a typo would silently refuse every webhook.
    """
    key = secret.removeprefix(_PREFIX)
    try:
        decoded = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if not decoded:
        raise ConfigError(
            "the webhook secret is not a Svix signing secret (whsec_ followed by base64); copy "
            "it from the endpoint's page in the Segments.ai webhook portal"
        )


def _rejection_reason(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "body is not UTF-8"
    if type(exc) is ValueError:
        return "malformed signature header"
    return str(exc) or type(exc).__name__


def parse_event(body: bytes) -> Event | None:
    """The fields serve uses from a verified body; None when it is not a JSON object."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    obj = data.get("object")
    obj = obj if isinstance(obj, dict) else {}
    event_type = _text(data.get("event_type"))
    is_label = bool(event_type and event_type.startswith("label."))
    return Event(
        event_type=event_type,
        dataset=_text(data.get("dataset")),
        sample_uuid=_text(obj.get("sample_uuid") if is_label else obj.get("uuid")),
        labelset=_text(obj.get("labelset")),
        label_status=_text(obj.get("label_status")),
        created_at=_text(data.get("created_at")),
    )


def decide(
    event: Event | None, message_id: str, *, datasets: Collection[str], labelset: str
) -> SampleTask | Ignored:
    """What to do with a verified event: queue a sample, or acknowledge and ignore it."""
    if event is None:
        return Ignored("body is not a JSON event")
    if event.dataset is None or event.dataset not in datasets:
        return Ignored(f"dataset {event.dataset} is not served")
    if (
        event.event_type == LABEL_UPDATED
        and event.label_status is not None
        and may_write(event.label_status, overwrite=True)
    ):
        return Ignored("echo of a pre-label write")
    trigger: Trigger
    if event.event_type == SAMPLE_CREATED:
        trigger = SAMPLE_CREATED
    elif event.event_type == LABEL_DELETED:
        trigger = LABEL_DELETED
        if event.labelset not in (None, labelset):
            return Ignored(f"labelset {event.labelset} is not served")
    else:
        return Ignored(f"event {event.event_type} is not handled")
    if not event.sample_uuid:
        return Ignored(f"{trigger} without a sample uuid")
    return SampleTask(event.dataset, event.sample_uuid, trigger, message_id)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
