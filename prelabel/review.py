"""Notebook helpers: look at predictions, tune prompts and thresholds, push accepted labels.

``notebooks/review.ipynb`` is built only on this module, so the notebook holds no logic of its
own. Pushing goes through the same safe path as ``prelabel run`` (re-read before write, never
over a person's label, state recorded for resume). This is the only module that draws.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from prelabel.config import CategoryOptions, Settings
from prelabel.encode import encode_label
from prelabel.errors import AuthError
from prelabel.export import overlay
from prelabel.panoptic import PanopticPrediction
from prelabel.pipeline.pipeline import Pipeline
from prelabel.report import SampleOutcome
from prelabel.segments_client import SampleRef, SegmentsApi
from prelabel.source import load_image, select_samples
from prelabel.state import StateStore, default_state_dir
from prelabel.taxonomy import Taxonomy, build_taxonomy, categories_from_task_attributes
from prelabel.upload import upload_asset, write_label
from prelabel.worker import RunOptions, prepare


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
        self.info, self.taxonomy = prepare(api, self.settings, self.options)
        self.category_options: dict[str, CategoryOptions] = dict(self.settings.categories)
        self.pipeline = pipeline or Pipeline.load(self.settings, models_dir)
        self.state = StateStore.in_dir(state_dir or default_state_dir())

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

    def predict(self, sample: SampleRef) -> ReviewItem:
        image = load_image(self.api, sample, max_pixels=self.pipeline.settings.max_image_pixels)
        prediction = self.pipeline.predict(image, self.taxonomy)
        return ReviewItem(sample=sample, image=image, prediction=prediction, taxonomy=self.taxonomy)

    def push(
        self, items: Iterable[ReviewItem], *, overwrite_prelabels: bool = False
    ) -> list[SampleOutcome]:
        """Upload accepted predictions as PRELABELED labels, safely (see :mod:`prelabel.upload`)."""
        outcomes = []
        dataset, labelset = self.options.dataset, self.options.labelset
        for item in items:
            sample = item.sample
            pending = upload_asset(
                self.api,
                self.state,
                dataset=dataset,
                labelset=labelset,
                sample_uuid=sample.uuid,
                sample_name=sample.name,
                encoded=encode_label(item.prediction),
            )
            result = write_label(
                self.api,
                self.settings.remote,
                sample_uuid=sample.uuid,
                labelset=labelset,
                pending=pending,
                overwrite=overwrite_prelabels,
            )
            if result.written:
                self.state.mark_labeled(dataset, labelset, sample.uuid, sample.name)
                outcomes.append(SampleOutcome(sample.uuid, sample.name, "labeled"))
            else:
                reason = result.reason or "not written"
                self.state.mark_skipped(dataset, labelset, sample.uuid, sample.name, reason)
                outcomes.append(SampleOutcome(sample.uuid, sample.name, "skipped", reason=reason))
        return outcomes

    def close(self) -> None:
        self.state.close()
        self.api.close()
