"""Pre-label a Segments.ai dataset: source -> pipeline -> encode -> upload, per sample.

Each sample is isolated: its failure is recorded (state, report, summary) and the run goes on.
Only problems that would fail every sample stop the run: a refused API key, a wrong task type,
categories the config does not match, models that cannot load.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prelabel.config import Settings
from prelabel.encode import encode_label, label_attributes
from prelabel.errors import (
    AuthError,
    ConfigError,
    ModelLoadError,
    PrelabelError,
    RemoteError,
    TransientRemoteError,
)
from prelabel.progress import NullProgress, Progress
from prelabel.report import ReportWriter, RunSummary, SampleOutcome
from prelabel.segments_client import BITMAP_TASK_TYPES, DatasetInfo, SampleRef, SegmentsApi
from prelabel.source import load_image, select_samples
from prelabel.state import LABELED, UPLOADED, StateStore
from prelabel.taxonomy import Taxonomy, build_taxonomy, categories_from_task_attributes
from prelabel.upload import PendingLabel, upload_asset, write_label

if TYPE_CHECKING:
    # Importing the pipeline imports torch and transformers (seconds): only when a model is
    # needed, so a refused key or a wrong dataset is reported at once.
    from prelabel.pipeline.pipeline import Pipeline

logger = logging.getLogger(__name__)

#: After this many samples in a row fail on transient errors (each after its own retries) the
#: server is down, not the samples bad: stop instead of marking the whole dataset failed.
_MAX_CONSECUTIVE_TRANSIENT = 3


@dataclass(frozen=True)
class RunOptions:
    dataset: str
    labelset: str = "ground-truth"
    limit: int | None = None
    dry_run: bool = False
    overwrite_prelabels: bool = False
    #: report.json goes here, and with ``dry_run`` what would have been uploaded.
    output_dir: Path = Path("prelabel-output")


def prepare(
    api: SegmentsApi, settings: Settings, options: RunOptions
) -> tuple[DatasetInfo, Taxonomy]:
    """Everything checkable before any sample is touched; raises ConfigError with the reason."""
    info = api.get_dataset(options.dataset)
    if info.task_type not in BITMAP_TASK_TYPES:
        raise ConfigError(
            f"dataset {options.dataset} has task type {info.task_type!r}; prelabel writes "
            f"segmentation bitmaps and needs one of {', '.join(sorted(BITMAP_TASK_TYPES))}"
        )
    if info.labelsets and options.labelset not in info.labelsets:
        raise ConfigError(
            f"dataset {options.dataset} has no labelset {options.labelset!r}; "
            f"it has {', '.join(info.labelsets)}"
        )
    categories = categories_from_task_attributes(info.task_attributes)
    if not categories:
        raise ConfigError(f"dataset {options.dataset} defines no categories")
    taxonomy = build_taxonomy(categories, settings.categories, settings.pipeline)
    return info, taxonomy


class DatasetWorker:
    """Runs the per-sample steps; the loop lives in :meth:`run` (and in sync, ray, ...)."""

    def __init__(
        self,
        api: SegmentsApi,
        settings: Settings,
        options: RunOptions,
        taxonomy: Taxonomy,
        state: StateStore,
        load_pipeline: Callable[[], Pipeline],
        *,
        expected_samples: int | None = None,
    ) -> None:
        self.api = api
        self.settings = settings
        self.options = options
        self.taxonomy = taxonomy
        self.state = state
        self._load_pipeline = load_pipeline
        self._pipeline: Pipeline | None = None
        self._consecutive_transient = 0
        self._expected = expected_samples

    @property
    def pipeline(self) -> Pipeline:
        """Loaded on first use: a run with nothing to do never loads the models."""
        if self._pipeline is None:
            self._pipeline = self._load_pipeline()
        return self._pipeline

    def run(self, progress: Progress | None = None) -> RunSummary:
        progress = progress or NullProgress()
        summary = RunSummary()
        opts = self.options
        writer = ReportWriter(
            opts.output_dir / "report.json",
            {"dataset": opts.dataset, "labelset": opts.labelset, "dry_run": opts.dry_run},
        )
        # The bar counts listed samples (those already labeled pass quickly) against the
        # dataset's size; with --limit it counts the processed ones against the limit.
        progress.start(opts.limit or self._expected, "pre-label")
        done = 0
        try:
            for sample, selected in select_samples(
                self.api, opts.dataset, opts.labelset, overwrite_prelabels=opts.overwrite_prelabels
            ):
                if not selected:
                    if opts.limit is None:
                        progress.advance()
                    continue
                if opts.limit is not None and done >= opts.limit:
                    break
                outcome = self.process(sample)
                done += 1
                summary.add(outcome)
                writer.add(outcome)
                progress.advance()
                progress.note(**{k: v for k, v in summary.counts.items() if v})
        finally:
            progress.close()
            summary.report_path = writer.close(summary)
        return summary

    def process(self, sample: SampleRef) -> SampleOutcome:
        """One sample from listing to label; never raises for a problem of this sample alone."""
        opts = self.options
        try:
            outcome = self._process(sample)
        except (AuthError, ModelLoadError):
            raise  # would fail every sample alike
        except TransientRemoteError as exc:
            self._consecutive_transient += 1
            if self._consecutive_transient >= _MAX_CONSECUTIVE_TRANSIENT:
                raise RemoteError(
                    f"stopping: {self._consecutive_transient} samples in a row failed to reach "
                    f"the server after retries (last: {exc}); rerun to resume"
                ) from None
            reason = str(exc)
        except PrelabelError as exc:
            reason = str(exc)
        except (OSError, ValueError, RuntimeError) as exc:
            # A bug or an odd input in the model code: keep the traceback in the log.
            logger.exception("sample %s (%s) failed", sample.name, sample.uuid)
            reason = f"{type(exc).__name__}: {exc}"
        else:
            self._consecutive_transient = 0
            return outcome
        logger.error("sample %s (%s) failed: %s", sample.name, sample.uuid, reason)
        if not opts.dry_run:
            self.state.mark_failed(opts.dataset, opts.labelset, sample.uuid, sample.name, reason)
        return SampleOutcome(sample.uuid, sample.name, "failed", reason=reason)

    def _process(self, sample: SampleRef) -> SampleOutcome:
        opts = self.options
        record = None if opts.dry_run else self.state.get(opts.dataset, opts.labelset, sample.uuid)
        if record is not None and record.stage == LABELED and not opts.overwrite_prelabels:
            reason = "prelabel wrote this label before and it was removed on the server"
            self.state.mark_skipped(opts.dataset, opts.labelset, sample.uuid, sample.name, reason)
            return SampleOutcome(sample.uuid, sample.name, "skipped", reason=reason)
        if (
            record is not None
            and record.stage == UPLOADED
            and record.asset_url
            and record.attributes
        ):
            pending = PendingLabel(record.asset_url, record.attributes, record.score or 0.0)
            segments = len(record.attributes.get("annotations", []))
        else:
            image = load_image(self.api, sample, max_pixels=self.settings.pipeline.max_image_pixels)
            prediction = self.pipeline.predict(image, self.taxonomy)
            encoded = encode_label(prediction)
            segments = len(prediction.segments)
            if opts.dry_run:
                self._save_dry_run(sample, encoded.png, encoded.annotations, encoded.score)
                return SampleOutcome(
                    sample.uuid, sample.name, "dry-run", segments=segments, score=encoded.score
                )
            pending = upload_asset(
                self.api,
                self.state,
                dataset=opts.dataset,
                labelset=opts.labelset,
                sample_uuid=sample.uuid,
                sample_name=sample.name,
                encoded=encoded,
            )
        result = write_label(
            self.api,
            self.settings.remote,
            sample_uuid=sample.uuid,
            labelset=opts.labelset,
            pending=pending,
            overwrite=opts.overwrite_prelabels,
        )
        if not result.written:
            reason = result.reason or "not written"
            self.state.mark_skipped(opts.dataset, opts.labelset, sample.uuid, sample.name, reason)
            return SampleOutcome(sample.uuid, sample.name, "skipped", reason=reason)
        self.state.mark_labeled(opts.dataset, opts.labelset, sample.uuid, sample.name)
        return SampleOutcome(
            sample.uuid, sample.name, "labeled", segments=segments, score=pending.score
        )

    def _save_dry_run(
        self, sample: SampleRef, png: bytes, annotations: list[dict[str, int]], score: float
    ) -> None:
        folder = self.options.output_dir / "dry-run"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{sample.uuid}.png").write_bytes(png)
        attributes = label_attributes(annotations, f"{sample.uuid}.png")
        payload = {
            "sample_uuid": sample.uuid,
            "sample_name": sample.name,
            "label_status": "PRELABELED",
            "score": score,
            "attributes": attributes,
        }
        (folder / f"{sample.uuid}.json").write_text(json.dumps(payload, indent=2))
