"""The one seam between ``serve`` and the per-sample lifecycle.

``serve`` decides *when* samples run (a webhook arrived, the interval passed) and never *how*:
every rule about a sample (leases, skipping a person's label, the safe write, resume, failure
policy) stays in the lifecycle behind :class:`Lifecycle`. :mod:`prelabel.serve.adapter`
implements it over :mod:`prelabel.run` (:class:`~prelabel.run.steps.SampleSteps` run by a
:class:`~prelabel.run.dataset.DatasetWorker`); re-pointing that one adapter moves serve onto
another lifecycle.

The lifecycle reports back through an :class:`Observer`: each sample's outcome once, and the
model time per image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from prelabel.run.outcome import SampleOutcome
from prelabel.run.report import RunSummary

ShouldStop = Callable[[], bool]


class Observer(Protocol):
    def on_outcome(self, dataset: str, outcome: SampleOutcome) -> None:
        """Called once per finished sample, webhook batch or cycle alike."""

    def on_inference(self, seconds: float) -> None:
        """Model time of one image."""


class Lifecycle(Protocol):
    def prepare(self, dataset: str) -> None:
        """Check that ``dataset`` can be served (task type, labelset, categories).

        Raises ConfigError, NotFoundRemoteError or AuthError for what will not fix itself,
        TransientRemoteError when the API is down.
        """

    def load_models(self) -> None:
        """Load the models now, once (blocking); raises ModelLoadError."""

    def check_api(self) -> None:
        """One quick authenticated request, no retries; raises RemoteError when it fails."""

    def label_samples(
        self, dataset: str, sample_uuids: Iterable[str], should_stop: ShouldStop
    ) -> None:
        """Pre-label these samples of ``dataset`` now, in order, as the iterable yields them.

        Each sample is re-read through the API first (a deleted one is reported as skipped), and
        its outcome goes to the observer exactly once. Once ``should_stop()`` is true no new
        sample starts and those in progress finish. Raises RemoteError when the server is down
        (samples not started are then left for the next cycle).
        """

    def run_cycle(self, dataset: str, should_stop: ShouldStop) -> RunSummary:
        """One ``prelabel sync`` cycle over ``dataset``: every sample that needs a pre-label."""

    def ends_loop(self, exc: BaseException) -> bool:
        """Whether ``exc``, escaping a webhook batch, will not fix itself (a refused key, a bad
        config, models that cannot load): the run policy's one table, which the cycles'
        ``sync_loop`` asks too. Anything else of prelabel's is retried with backoff."""

    def close(self) -> None:
        """Release connections."""
