"""Prometheus metrics of ``prelabel serve``, fed by outcomes, deliveries and cycles.

Sample counts come from outcomes only: whatever runs a sample (a webhook batch, a sync cycle)
reports each :class:`~prelabel.run.outcome.SampleOutcome` once to :meth:`Metrics.on_outcome`, the
hook the lifecycle's recorder calls. Each :class:`Metrics` has its own registry, so several
services in one process (tests) do not share counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from prelabel.run.outcome import SampleOutcome

CONTENT_TYPE = CONTENT_TYPE_LATEST
SAMPLE_RESULTS = ("labeled", "skipped", "failed")
#: accepted: queued (or merged with a queued task of its sample); duplicate: a message id
#: already acted on; ignored: verified, nothing to do; rejected: 401; refused: 503 (queue full
#: or shutting down), the sender retries.
DELIVERY_RESULTS = ("accepted", "duplicate", "ignored", "rejected", "refused")
#: Seconds per image; from tiny test models (milliseconds) to large ones on a CPU (a minute).
_INFERENCE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """The counters, gauges and histogram ``GET /metrics`` shows."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._samples = Counter(
            "prelabel_samples",
            "Samples finished, by result.",
            ["result"],
            registry=self.registry,
        )
        self._deliveries = Counter(
            "prelabel_webhook_deliveries",
            "Webhook deliveries received, by what was done with them.",
            ["result"],
            registry=self.registry,
        )
        self._queue = Gauge(
            "prelabel_queue_depth", "Samples waiting in the webhook queue.", registry=self.registry
        )
        self._inference = Histogram(
            "prelabel_inference_seconds",
            "Model time per image.",
            buckets=_INFERENCE_BUCKETS,
            registry=self.registry,
        )
        self._last_cycle = Gauge(
            "prelabel_last_cycle_success_timestamp_seconds",
            "Unix time the last complete sync cycle ended (0: none yet).",
            registry=self.registry,
        )
        for result in SAMPLE_RESULTS:
            self._samples.labels(result)
        for result in DELIVERY_RESULTS:
            self._deliveries.labels(result)

    def watch_queue(self, depth: Callable[[], int]) -> None:
        """Read the queue depth from ``depth()`` at each scrape."""
        self._queue.set_function(lambda: float(depth()))

    def on_outcome(self, dataset: str, outcome: SampleOutcome) -> None:
        """Count one finished sample (the recorder's per-outcome hook)."""
        self._samples.labels(outcome.result).inc()

    def on_inference(self, seconds: float) -> None:
        self._inference.observe(seconds)

    def on_delivery(self, result: str) -> None:
        if result not in DELIVERY_RESULTS:
            raise ValueError(f"unknown delivery result {result!r}")
        self._deliveries.labels(result).inc()

    def on_cycle_success(self) -> None:
        self._last_cycle.set(time.time())

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
