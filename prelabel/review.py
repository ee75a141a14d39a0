"""Notebook helpers: look at predictions, tune prompts and thresholds, push accepted labels.

``notebooks/review.ipynb`` is built only on this module, so the notebook holds no logic of its
own. Pushing goes through the same safe path as ``prelabel run`` (re-read before write, never
over a person's label, state recorded for resume). This is the only module that draws.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image

from prelabel.config import CategoryOptions, Settings
from prelabel.errors import AuthError, RemoteError, SampleError
from prelabel.formats.overlay import overlay
from prelabel.panoptic import PanopticPrediction
from prelabel.pipeline.pipeline import Pipeline
from prelabel.run.job import Job, RunOptions
from prelabel.run.outcome import SampleOutcome
from prelabel.run.recorder import Recorder
from prelabel.run.steps import SampleSteps
from prelabel.segments.client import SampleRef, SegmentsApi
from prelabel.segments.dataset import check_dataset
from prelabel.segments.samples import select_samples
from prelabel.state import StateStore
from prelabel.taxonomy import Taxonomy, build_taxonomy, categories_from_task_attributes


@dataclass
class ReviewItem:
    """One sample with its prediction; shows itself as image, overlay and segment table."""

    sample: SampleRef
    image: Image.Image
    prediction: PanopticPrediction
    taxonomy: Taxonomy = field(repr=False)

    def rows(self) -> list[dict[str, object]]:
        """One row per segment: id, category, thing/stuff, score, area (largest first)."""
        return [
            {
                "id": seg.id,
                "category": self.taxonomy.category(seg.category_id).name,
                "kind": "thing" if seg.is_thing else "stuff",
                "score": round(seg.score, 3),
                "area": seg.area,
            }
            for seg in sorted(self.prediction.segments, key=lambda s: -s.area)
        ]

    def preview(self, max_width: int = 1024) -> Image.Image:
        """The image and its pre-label overlay side by side."""
        drawn = overlay(self.image, self.prediction, self.taxonomy)
        width, height = self.image.size
        both = Image.new("RGB", (width * 2, height))
        both.paste(self.image, (0, 0))
        both.paste(drawn, (width, 0))
        if both.width > max_width:
            both = both.resize((max_width, round(both.height * max_width / both.width)))
        return both

    def _repr_html_(self) -> str:
        return f"<b>{html.escape(self.sample.name)}</b>" + render_table(self.rows())


def render_table(rows: Sequence[dict[str, object]]) -> str:
    """A plain HTML table (no pandas needed)."""
    if not rows:
        return "<p><i>no segments</i></p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values()) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class ReviewSession:
    """A dataset, its taxonomy and a loaded pipeline, for interactive use."""

    def __init__(
        self,
        api: SegmentsApi,
        dataset: str,
        *,
        labelset: str = "ground-truth",
        settings: Settings | None = None,
        pipeline: Pipeline | None = None,
        models_dir: Path | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.api = api
        self.settings = settings or Settings()
        self.options = RunOptions(dataset=dataset, labelset=labelset)
        self.info, self.taxonomy = check_dataset(api, self.settings, dataset, labelset)
        self.category_options: dict[str, CategoryOptions] = dict(self.settings.categories)
        self.pipeline = pipeline or Pipeline.load(self.settings, models_dir)
        self.state = StateStore.in_dir(state_dir)

    @classmethod
    def connect(
        cls,
        dataset: str,
        *,
        api_url: str | None = None,
        api_key: str | None = None,
        settings: Settings | None = None,
        **kwargs: object,
    ) -> ReviewSession:
        """Connect with ``api_key`` or ``SEGMENTS_API_KEY``; ``api_url`` may be an emulator."""
        key = api_key or os.environ.get("SEGMENTS_API_KEY", "")
        if not key:
            raise AuthError("no API key: set SEGMENTS_API_KEY or pass api_key=")
        settings = settings or Settings()
        if api_url:
            remote = settings.remote.model_copy(update={"api_url": api_url})
            settings = settings.model_copy(update={"remote": remote})
        api = SegmentsApi.connect(key, settings.remote)
        return cls(api, dataset, settings=settings, **kwargs)  # type: ignore[arg-type]

    def samples(self, limit: int = 10, *, overwrite_prelabels: bool = False) -> list[SampleRef]:
        """The first ``limit`` samples ``prelabel run`` would label."""
        picked = []
        for sample, selected in select_samples(
            self.api,
            self.options.dataset,
            self.options.labelset,
            overwrite_prelabels=overwrite_prelabels,
        ):
            if selected:
                picked.append(sample)
            if len(picked) >= limit:
                break
        return picked

    def tune(self, category: str, **changes: object) -> None:
        """Change one category's prompt, thresholds or ``ignore``, then rebuild the prompts.

        Example: ``session.tune("person", prompt="person . pedestrian", box_threshold=0.4)``.
        """
        current = self.category_options.get(category, CategoryOptions())
        self.category_options[category] = current.model_copy(update=changes)
        self.taxonomy = build_taxonomy(
            categories_from_task_attributes(self.info.task_attributes),
            self.category_options,
            self.settings.pipeline,
        )

    def tune_pipeline(self, **changes: object) -> None:
        """Change pipeline-wide settings (``min_area``, ``points_per_region``, ...)."""
        settings = self.pipeline.settings.model_copy(update=changes)
        self.pipeline = Pipeline(self.pipeline.models, settings)

    def _steps(self, *, overwrite_prelabels: bool = False) -> SampleSteps:
        """The run's steps with the current (tuned) taxonomy and pipeline."""
        options = replace(self.options, overwrite_prelabels=overwrite_prelabels)
        settings = self.settings.model_copy(update={"pipeline": self.pipeline.settings})
        return SampleSteps(self.api, settings, options, self.taxonomy, lambda: self.pipeline)

    def predict(self, sample: SampleRef) -> ReviewItem:
        """Download and predict one sample, through the same steps as ``prelabel run``.

        Raises:
            SampleError: the sample failed (its image cannot be read, ...), with the reason.
        """
        steps = self._steps()
        job = steps.fetch(Job(sample))
        image = job.image
        job = steps.infer(job)
        if job.outcome is not None or image is None or job.prediction is None:
            reason = job.outcome.reason if job.outcome else "nothing was predicted"
            raise SampleError(
                f"{sample.name}: {reason}", sample_uuid=sample.uuid, sample_name=sample.name
            )
        return ReviewItem(
            sample=sample, image=image, prediction=job.prediction, taxonomy=self.taxonomy
        )

    def push(
        self, items: Iterable[ReviewItem], *, overwrite_prelabels: bool = False
    ) -> list[SampleOutcome]:
        """Upload accepted predictions as PRELABELED labels, safely (see
        :mod:`prelabel.segments.upload`), and return every item's outcome.

        One failing item fails only itself. When the server stays down (the failure policy's
        transient stop), the items not yet tried are returned as failed with that reason.
        """
        steps = self._steps(overwrite_prelabels=overwrite_prelabels)
        recorder = Recorder(self.state, steps.options, self.settings.worker)
        outcomes: list[SampleOutcome] = []
        stopped: str | None = None
        for item in items:
            job = Job(item.sample, prediction=item.prediction)
            if stopped is not None:
                job.finish("failed", reason=f"not pushed: {stopped}", record_state=False)
                assert job.outcome is not None
                outcomes.append(job.outcome)
                continue
            job = steps.deliver(job, recorder.record_upload)
            try:
                outcomes.append(recorder.record(job))
            except RemoteError as exc:
                assert job.outcome is not None
                outcomes.append(job.outcome)
                stopped = str(exc)
        recorder.close()
        return outcomes

    def close(self) -> None:
        self.state.close()
        self.api.close()
