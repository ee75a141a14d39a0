"""What the webhook handler does with one delivery, from raw bytes to an HTTP answer.

Order (``shared/segments-api.md`` 11.6): verify the signature over the raw body (401 on any
failure, nothing recorded), then the message id (a duplicate is acknowledged, nothing more),
then the event (ignored ones are acknowledged), then the queue: a task is queued and its id
recorded together, under one lock, or neither happens and the answer is 503 with
``Retry-After``. So a refused delivery's retry is not mistaken for a duplicate, and an accepted
one is in the queue. Nothing here calls the API or a model; the SQLite write of the message id is
the only I/O.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from prelabel.serve.dedup import DeliveryLog
from prelabel.serve.metrics import Metrics
from prelabel.serve.webhooks import Ignored, Rejected, SignatureVerifier, decide, parse_event
from prelabel.serve.work_queue import WorkQueue

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    status: int
    #: One of :data:`prelabel.serve.metrics.DELIVERY_RESULTS`.
    result: str
    detail: str
    retry_after_s: int | None = None


class Intake:
    """Admits deliveries into the queue; thread-safe, called from the server's thread pool."""

    def __init__(
        self,
        verifier: SignatureVerifier,
        deliveries: DeliveryLog,
        queue: WorkQueue,
        metrics: Metrics,
        *,
        datasets: Collection[str],
        labelset: str,
        accepting: Callable[[], bool],
        retry_after_s: int,
    ) -> None:
        self._verifier = verifier
        self._deliveries = deliveries
        self._queue = queue
        self._metrics = metrics
        self._datasets = frozenset(datasets)
        self._labelset = labelset
        self._accepting = accepting
        self._retry_after_s = retry_after_s
        self._lock = threading.Lock()

    def admit(self, body: bytes, headers: Mapping[str, str]) -> Answer:
        """Verify, dedupe and queue one delivery; never raises for a bad delivery."""
        try:
            message_id = self._verifier.verify(body, headers)
        except Rejected as exc:
            logger.warning("webhook rejected: %s", exc)
            return self._answer(Answer(401, "rejected", str(exc)))
        if not self._accepting():
            return self._refuse(message_id, "shutting down")
        event = parse_event(body)
        action = decide(event, message_id, datasets=self._datasets, labelset=self._labelset)
        event_type = event.event_type if event else None
        with self._lock:
            if self._deliveries.seen(message_id):
                logger.info("webhook %s (%s) is a duplicate", message_id, event_type)
                return self._answer(Answer(200, "duplicate", "already received"))
            if isinstance(action, Ignored):
                self._deliveries.record(message_id, event_type)
                logger.debug("webhook %s (%s) ignored: %s", message_id, event_type, action.reason)
                return self._answer(Answer(200, "ignored", action.reason))
            if not self._queue.has_room(action):
                return self._refuse(message_id, f"queue full ({self._queue.capacity} samples)")
            if not self._deliveries.record(message_id, event_type):
                return self._answer(Answer(200, "duplicate", "already received"))
            self._queue.offer(action)
        logger.debug("webhook %s (%s) queued", message_id, event_type)
        return self._answer(Answer(202, "accepted", "queued"))

    def too_large(self, limit: int) -> Answer:
        logger.warning("webhook rejected: body over %d bytes", limit)
        return self._answer(Answer(413, "rejected", f"body over {limit} bytes"))

    def _refuse(self, message_id: str, why: str) -> Answer:
        logger.warning("webhook %s refused (503, retry later): %s", message_id, why)
        return self._answer(Answer(503, "refused", why, retry_after_s=self._retry_after_s))

    def _answer(self, answer: Answer) -> Answer:
        self._metrics.on_delivery(answer.result)
        return answer
