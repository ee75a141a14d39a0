"""The one recorder of a run: where every outcome lands, on the engine's calling thread.

Per sample it applies, in this order: the resume state (unless a dry run), the summary, the
streamed report, the progress bar, the lease release and the stops of the failure policy
(server trouble in a row, the first samples failing alike in the model). It also admits
samples (leases and resume records are state too), and records an uploaded asset before its
label is written (:meth:`Recorder.record_upload`, the one call that may come from a delivery
thread; the state store is thread-safe).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prelabel.config import WorkerSettings
from prelabel.formats.sequence_label import label_object_count
from prelabel.progress import NullProgress, Progress
from prelabel.run.job import Job, RunOptions, UploadedFrame
from prelabel.run.outcome import SampleOutcome
from prelabel.run.policy import RunStop, parks
from prelabel.run.report import ReportWriter, RunSummary
from prelabel.segments.client import SampleRef
from prelabel.segments.upload import PendingLabel
from prelabel.state import LABELED, PARKED, UPLOADED, StateStore, new_owner, owner_is_dead

logger = logging.getLogger(__name__)

#: Why a sample whose label we wrote, and a person then deleted, is not labeled again.
REMOVED_ON_SERVER = "prelabel wrote this label before and it was removed on the server"
#: Why a sample announced by uuid (a webhook) is not labeled: it no longer exists.
SAMPLE_DELETED = "sample was deleted"


class Recorder:
    """Applies outcomes to state, summary, report and progress; stops on server trouble."""

    def __init__(
        self,
        state: StateStore | None,
        options: RunOptions,
        worker: WorkerSettings,
        *,
        report: ReportWriter | None = None,
        progress: Progress | None = None,
        stop: RunStop | None = None,
        on_outcome: Callable[[SampleOutcome], None] | None = None,
    ) -> None:
        self.state = None if options.dry_run else state
        self.options = options
        self.lease_s = worker.lease_s
        self.max_attempts = worker.max_attempts
        self.report = report
        self.progress = progress or NullProgress()
        self.stop = stop or RunStop()
        self.summary = RunSummary()
        #: Told of every recorded outcome (a service's metrics and logs).
        self.on_outcome = on_outcome
        #: Lease owner: unique per recorder, readable in reports ("host:pid:xxxx").
        self.owner = new_owner()
        #: Listed samples that needed nothing (see :meth:`passed`).
        self.passed_count = 0

    @classmethod
    def outcomes_only(
        cls,
        *,
        report: ReportWriter | None = None,
        progress: Progress | None = None,
        on_outcome: Callable[[SampleOutcome], None] | None = None,
    ) -> Recorder:
        """A recorder with no state and no leases: ``predict`` and ``evaluate``, which write
        nothing to a dataset, keep only the summary, the report, the progress bar and the
        policy's stops."""
        return cls(
            None,
            RunOptions(dataset="", dry_run=True),
            WorkerSettings(),
            report=report,
            progress=progress,
            on_outcome=on_outcome,
        )

    def admit(self, sample: SampleRef) -> Job:
        """Take the sample's lease and consult its resume record.

        The job comes back finished (skipped) when the sample itself is gone, when another
        live worker holds it, or when our label was deleted on the server; with a ``pending``
        label when an earlier run uploaded its bitmap (nothing to predict).
        """
        job = Job(sample)
        if sample.deleted:
            job.finish("skipped", reason=SAMPLE_DELETED, record_state=False)
            return job
        if self.state is None:
            return job
        opts, state = self.options, self.state
        holder = state.claim(opts.dataset, opts.labelset, sample.uuid, self.owner, self.lease_s)
        # A worker on this machine that was killed (kill -9) leaves its leases behind.
        if (
            holder is not None
            and owner_is_dead(holder)
            and state.take_over(
                opts.dataset, opts.labelset, sample.uuid, holder, self.owner, self.lease_s
            )
        ):
            holder = None
        if holder is not None:
            reason = f"being labeled by another worker ({holder})"
            job.finish("skipped", reason=reason, record_state=False)
            return job
        job.leased = True
        record = state.get(opts.dataset, opts.labelset, sample.uuid)
        stage = record.stage if record is not None else None
        if stage == LABELED and not opts.overwrite_prelabels:
            # Not recorded: the record must stay LABELED, or the next run would label the
            # sample again and the person's deletion would be respected only once.
            job.finish("skipped", reason=REMOVED_ON_SERVER, record_state=False)
        elif record is not None and stage == PARKED and not opts.retry_failed:
            reason = f"parked after {record.attempts} failures ({record.reason}); --retry-failed"
            job.finish("skipped", reason=reason, record_state=False)
        elif record is not None and stage == UPLOADED and record.asset_url:
            if record.attributes:
                job.pending = PendingLabel(record.asset_url, record.attributes, record.score or 0.0)
                job.segments = label_object_count(record.attributes)
        elif sample.frames:
            # A sequence killed half-way: the frames it uploaded are reused.
            frames = state.uploaded_frames(opts.dataset, opts.labelset, sample.uuid)
            job.frames = {i: UploadedFrame.from_dict(data) for i, data in frames.items()}
        return job

    def record_upload(self, job: Job) -> None:
        """Record an uploaded bitmap before its label is written, so a rerun reuses it."""
        if self.state is None or job.pending is None:
            return
        opts, sample = self.options, job.sample
        self.state.mark_uploaded(
            opts.dataset,
            opts.labelset,
            sample.uuid,
            sample.name,
            asset_url=job.pending.asset_url,
            attributes=job.pending.attributes,
            score=job.pending.score,
        )

    def record_frame(self, job: Job, index: int) -> None:
        """Record one uploaded frame bitmap of a sequence, so a rerun reuses it."""
        if self.state is None:
            return
        opts, frame = self.options, job.frames[index]
        self.state.mark_frame_uploaded(
            opts.dataset,
            opts.labelset,
            job.sample.uuid,
            index,
            frame.as_dict(),
        )

    def passed(self) -> None:
        """A listed sample that needs nothing: it only moves the progress bar."""
        self.passed_count += 1
        self.progress.advance()

    def record(self, job: Job) -> SampleOutcome:
        """Apply a finished job's outcome everywhere; may raise the transient stop.

        Raises:
            RuntimeError: the job has no outcome (a bug in a step, not in the sample).
            RemoteError: too many samples in a row failed on server trouble.
        """
        outcome = job.outcome
        if outcome is None:
            raise RuntimeError(f"sample {job.sample.name} finished without an outcome")
        opts, sample = self.options, job.sample
        if self.state is not None:
            if job.record_state:
                self._write_state(outcome)
            if job.leased:
                self.state.release(opts.dataset, opts.labelset, sample.uuid, self.owner)
        self.summary.add(outcome)
        if self.report is not None:
            self.report.add(outcome)
        self.progress.advance()
        self.progress.note(**{k: v for k, v in self.summary.counts.items() if v})
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        self.stop.observe(outcome, model_error=job.model_error)
        return outcome

    def _write_state(self, outcome: SampleOutcome) -> None:
        assert self.state is not None
        key = (self.options.dataset, self.options.labelset, outcome.sample_uuid)
        name, reason = outcome.sample_name, outcome.reason or ""
        if outcome.result == "labeled":
            self.state.mark_labeled(*key, name)
        elif outcome.result == "skipped":
            self.state.mark_skipped(*key, name, reason)
        elif outcome.result == "failed":
            max_attempts = self.max_attempts
            stage = self.state.mark_failed(
                *key,
                name,
                reason,
                transient=outcome.transient,
                parks=lambda attempts: parks(attempts, max_attempts),
            )
            if stage == PARKED:
                logger.warning(
                    "sample %s (%s) parked after %d failures: later runs leave it alone until "
                    "--retry-failed",
                    name,
                    outcome.sample_uuid,
                    self.max_attempts,
                )

    def close(self) -> RunSummary:
        """Free the leases of samples abandoned on a stop, close bar and report."""
        if self.state is not None:
            self.state.release_all(self.owner)
        self.stop.close()
        self.progress.close()
        if self.report is not None:
            self.summary.report_path = self.report.close(self.summary)
        return self.summary
