"""Webhook deliveries from the emulator, the way Segments.ai sends them through Svix.

``shared/segments-api.md`` 11.8: after a write through the API (a sample added, a label written
or deleted) the emulator POSTs the envelope of 11.3 to the configured URL, signed as in 11.4
with ``svix-id``, ``svix-timestamp`` and ``svix-signature`` headers (or ``webhook-*``). The
signature is computed here with the standard library, independently of the ``svix`` package
the receiver verifies with, so each checks the other.

Like Svix: one fresh ``msg_`` id per event, reused on every retry and duplicate; the timestamp
is the attempt's; any non-2xx answer or connection error is retried, on a shortened schedule
(``retry_delays_s``), then the message is given up. For tests: ``duplicate_rate`` sends a share
of messages twice, ``delay_s`` holds each message back before its first attempt. Deliveries go
out from a small thread pool, so a slow receiver does not hold up the API.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import queue
import random
import secrets
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

logger = logging.getLogger(__name__)

API_VERSION = "2021-08-01"


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    #: ``whsec_<base64>``: the endpoint's signing secret.
    secret: str
    duplicate_rate: float = 0.0
    delay_s: float = 0.0
    #: Waits before the 2nd, 3rd, ... attempt (Svix: 5 s, 5 min, 30 min, ... ).
    retry_delays_s: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0)
    timeout_s: float = 15.0
    header_prefix: Literal["svix", "webhook"] = "svix"
    seed: int = 0
    workers: int = 8

    def __post_init__(self) -> None:
        if not 0 <= self.duplicate_rate <= 1:
            raise ValueError(f"duplicate_rate must be in [0, 1], not {self.duplicate_rate}")
        if self.delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, not {self.delay_s}")
        signing_key(self.secret)  # fails early on a secret that cannot sign


@dataclass(frozen=True)
class WebhookDelivery:
    """One attempt: ``status`` is None when no HTTP answer came (``error`` says why)."""

    message_id: str
    event_type: str
    dataset: str
    attempt: int
    duplicate: bool
    status: int | None
    error: str | None
    seconds: float


@dataclass(frozen=True)
class _Message:
    message_id: str
    event_type: str
    dataset: str
    body: str
    attempt: int = 1
    duplicate: bool = False


def signing_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (the prefix is optional, as in Svix)."""
    key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    if not key:
        raise ValueError("empty webhook secret")
    return key


def sign(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """The ``v1,<base64 HMAC-SHA256>`` signature of ``"{id}.{timestamp}.{body}"``."""
    digest = hmac.new(
        signing_key(secret), f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256
    ).digest()
    return "v1," + base64.b64encode(digest).decode()


def envelope(event_type: str, dataset: str, obj: dict[str, Any]) -> str:
    """The JSON body of 11.3, compact as it is signed and sent."""
    data = {
        "event_type": event_type,
        "created_at": datetime.now(UTC).isoformat(timespec="microseconds"),
        "api_version": API_VERSION,
        "dataset": dataset,
        "object": obj,
        "text": f"{event_type} in {dataset}",
    }
    return json.dumps(data, separators=(",", ":"))


class WebhookSender:
    """Schedules, signs, sends and retries deliveries to one endpoint."""

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._due: list[tuple[float, int, _Message]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._stopping = False
        self._log: list[WebhookDelivery] = []
        # Daemon threads rather than a ThreadPoolExecutor, whose threads the interpreter joins
        # at exit: a POST to a receiver that never answers would hold the process for its
        # whole timeout after stop (SIGTERM to ``prelabel emulator``).
        self._queue: queue.SimpleQueue[_Message | None] = queue.SimpleQueue()
        self._workers = [
            threading.Thread(target=self._work, name=f"emulator-webhook-{i}", daemon=True)
            for i in range(config.workers)
        ]
        self._thread = threading.Thread(target=self._dispatch, name="emulator-hooks", daemon=True)

    def start(self) -> WebhookSender:
        self._thread.start()
        for worker in self._workers:
            worker.start()
        return self

    def emit(self, event_type: str, dataset: str, obj: dict[str, Any]) -> str:
        """Queue one event for delivery; returns its message id."""
        message = _Message(
            f"msg_{secrets.token_hex(12)}", event_type, dataset, envelope(event_type, dataset, obj)
        )
        now = time.monotonic()
        with self._cond:
            self._schedule(now + self.config.delay_s, message)
            if self._rng.random() < self.config.duplicate_rate:
                copy = replace(message, duplicate=True)
                self._schedule(now + self.config.delay_s + 0.01, copy)
        return message.message_id

    @property
    def deliveries(self) -> list[WebhookDelivery]:
        """Every attempt so far, in the order they finished."""
        with self._cond:
            return list(self._log)

    @property
    def pending(self) -> int:
        """Messages waiting or being sent (retries included)."""
        with self._cond:
            return len(self._due) + self._in_flight

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is pending; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._due and not self._in_flight, timeout)

    def stop(self, grace_s: float = 0.5) -> None:
        """Send nothing more: attempts under way get ``grace_s`` to finish, then are left to
        their daemon threads (ended with the process), so a receiver that never answers does
        not hold a stop for the request's timeout."""
        deadline = time.monotonic() + grace_s
        with self._cond:
            self._stopping = True
            self._due.clear()
            self._cond.notify_all()
        for _ in self._workers:
            self._queue.put(None)
        for thread in [self._thread, *self._workers]:
            if thread.is_alive():
                thread.join(timeout=max(deadline - time.monotonic(), 0.0))

    def _schedule(self, due: float, message: _Message) -> None:
        heapq.heappush(self._due, (due, next(self._order), message))
        self._cond.notify_all()

    def _dispatch(self) -> None:
        with self._cond:
            while not self._stopping:
                if not self._due:
                    self._cond.wait()
                    continue
                wait = self._due[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                _, _, message = heapq.heappop(self._due)
                self._in_flight += 1
                self._queue.put(message)

    def _work(self) -> None:
        """One delivery thread: sends what the dispatcher hands it, until stopped (what was
        handed over but not started by then is dropped)."""
        while (message := self._queue.get()) is not None:
            if self._stopping:
                with self._cond:
                    self._in_flight -= 1
                    self._cond.notify_all()
                continue
            self._send(message)

    def _send(self, message: _Message) -> None:
        status, error, started = None, None, time.monotonic()
        try:
            status = self._post(message)
        except (urllib.error.URLError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        record = WebhookDelivery(
            message.message_id,
            message.event_type,
            message.dataset,
            message.attempt,
            message.duplicate,
            status,
            error,
            time.monotonic() - started,
        )
        ok = status is not None and 200 <= status < 300
        retries = self.config.retry_delays_s
        with self._cond:
            self._log.append(record)
            self._in_flight -= 1
            if not ok and message.attempt <= len(retries) and not self._stopping:
                retry = replace(message, attempt=message.attempt + 1)
                self._schedule(time.monotonic() + retries[message.attempt - 1], retry)
            elif not ok:
                given_up = (message.message_id, message.attempt)
                logger.warning("webhook %s given up after %d attempts", *given_up)
            self._cond.notify_all()

    def _post(self, message: _Message) -> int:
        timestamp = int(time.time())
        prefix = self.config.header_prefix
        headers = {
            "Content-Type": "application/json",
            f"{prefix}-id": message.message_id,
            f"{prefix}-timestamp": str(timestamp),
            f"{prefix}-signature": sign(
                self.config.secret, message.message_id, timestamp, message.body
            ),
        }
        request = urllib.request.Request(
            self.config.url, data=message.body.encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:  # a non-2xx answer is an answer
            exc.close()
            return int(exc.code)
