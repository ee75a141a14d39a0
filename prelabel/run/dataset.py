"""One ``prelabel run`` over a dataset on this machine: list, then every sample's lifecycle.

Each sample is isolated: its failure is recorded (state, report, summary) and the run goes on.
Only problems that would fail every sample stop the run: a refused API key, a wrong task type,
categories the config does not match, models that cannot load, the server down (see
:mod:`prelabel.run.policy`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prelabel.config import Settings
from prelabel.progress import NullProgress, Progress
from prelabel.run.driver import drive, local_engine
from prelabel.run.job import RunOptions
from prelabel.run.kinds import steps_for
from prelabel.run.outcome import SampleOutcome
from prelabel.run.recorder import Recorder
from prelabel.run.report import ReportWriter, RunSummary
from prelabel.run.steps import Predictor, SampleSteps
from prelabel.segments.client import SampleRef, SegmentsApi
from prelabel.segments.dataset import check_dataset
from prelabel.segments.samples import select_samples
from prelabel.state import StateStore


def selected_samples(
    api: SegmentsApi,
    options: RunOptions,
    *,
    on_passed: Callable[[], None] = lambda: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[SampleRef]:
    """The samples to label, lazily, up to ``options.limit``; ``on_passed`` per other one.

    The progress bar counts listed samples (those already labeled pass quickly) against the
    dataset's size; with a limit it counts the selected ones against the limit, so passed
    samples are not reported then.
    """
    done = 0
    for sample, selected in select_samples(
        api, options.dataset, options.labelset, overwrite_prelabels=options.overwrite_prelabels
    ):
        if should_stop() or (options.limit is not None and done >= options.limit):
            return
        if not selected:
            if options.limit is None:
                on_passed()
            continue
        done += 1
        yield sample


def announced_samples(
    api: SegmentsApi,
    labelset: str,
    sample_uuids: Iterable[str],
    *,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[SampleRef]:
    """The samples named by uuid (a webhook's payload gives only identifiers), each re-read
    through the API as it is taken; one that no longer exists comes as :meth:`SampleRef.gone`,
    which the recorder reports as skipped. For :meth:`DatasetWorker.run`'s ``samples``."""
    for uuid in sample_uuids:
        if should_stop():
            return
        yield api.get_sample(uuid, labelset) or SampleRef.gone(uuid)


class DatasetWorker:
    """A run on this machine: the steps of one dataset, scheduled by ``worker.engine``."""

    def __init__(
        self,
        steps: SampleSteps,
        state: StateStore,
        *,
        expected_samples: int | None = None,
        on_outcome: Callable[[SampleOutcome], None] | None = None,
    ) -> None:
        self.steps = steps
        self.on_outcome = on_outcome
        self.api, self.settings, self.options = steps.api, steps.settings, steps.options
        self.state = state
        self._expected = expected_samples

    def recorder(self, progress: Progress | None = None) -> Recorder:
        """A recorder writing this run's report.json (and state, unless a dry run)."""
        opts = self.options
        report = ReportWriter(
            opts.output_dir / "report.json",
            {"dataset": opts.dataset, "labelset": opts.labelset, "dry_run": opts.dry_run},
        )
        return Recorder(
            self.state,
            opts,
            self.settings.worker,
            report=report,
            progress=progress or NullProgress(),
            on_outcome=self.on_outcome,
        )

    def run(
        self,
        progress: Progress | None = None,
        *,
        should_stop: Callable[[], bool] | None = None,
        samples: Iterable[SampleRef] | None = None,
    ) -> RunSummary:
        """Label every selected sample, overlapped or one after the other (``worker.engine``).

        ``should_stop`` is polled between samples (sync's signal handling): once it returns
        True no new sample starts, samples already uploading finish, and the run returns.
        ``samples`` replaces the dataset's listing (samples a webhook announced); they go
        through the same steps, so one a person labeled meanwhile is skipped as usual.
        """
        stop = should_stop or (lambda: False)
        recorder = self.recorder(progress)
        if samples is None:
            samples = selected_samples(
                self.api, self.options, on_passed=recorder.passed, should_stop=stop
            )
        return drive(
            samples,
            self.steps,
            recorder,
            local_engine(self.settings.worker),
            should_stop=stop,
            expected=self.options.limit or self._expected,
        )


def run_dataset(
    api_key: str,
    settings: Settings,
    options: RunOptions,
    *,
    state: StateStore,
    load_pipeline: Callable[[], Predictor],
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunSummary:
    """Connect, check the dataset, and label what needs labeling: one ``prelabel run``.

    ``load_pipeline`` is called at most once, and only when a sample needs a prediction; sync
    passes a cached loader so models load once across cycles.
    """
    api = SegmentsApi.connect(api_key, settings.remote)
    try:
        info, taxonomy = check_dataset(
            api, settings, options.dataset, options.labelset, sequences=True, vectors=True
        )
        steps = steps_for(api, settings, options, info, taxonomy, load_pipeline)
        worker = DatasetWorker(steps, state, expected_samples=info.samples_count)
        return worker.run(progress, should_stop=should_stop)
    finally:
        api.close()
