"""The ``sam3`` back-end behind the seam: SAM 3 alone makes things and stuff.

Per batch: one vision-encoder call for all images when the batch opens (``embed``); the
taxonomy's phrases go through the text encoder once per run, the first time they are seen
(``text``: the predictor caches embeddings by phrase, so later images and batches find them);
each session's :meth:`~_Session.things` runs the detector on the image's features, K phrases
per call (``things``), and :meth:`~_Session.stuff` reads the semantic head the same way
(``stuff``). Options: ``score_threshold`` per category (the pipeline-wide default of that name
otherwise), the shared ``nms_iou``, ``cross_category_iou`` and ``max_detections``, and
``background_threshold`` for stuff (see :mod:`.candidates` for where stuff departs from the
seed's algorithm).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from prelabel.backends.base import BackendSpec, ImageSession, TextLimit
from prelabel.backends.loading import MODEL_TITLES
from prelabel.backends.sam3.candidates import StuffQuery, ThingQuery, phrase_table
from prelabel.backends.sam3.loading import SAM3_SUBDIR, Sam3Models
from prelabel.backends.sam3.predictor import Sam3Predictor
from prelabel.backends.sam3.session import Sam3Session, open_sessions
from prelabel.backends.sam3.spec import SPEC
from prelabel.config import PipelineSettings
from prelabel.panoptic import MaskCandidate
from prelabel.pipeline.clock import StageClock
from prelabel.taxonomy import Taxonomy

__all__ = ["Sam3Backend", "stuff_queries", "thing_queries"]


class Sam3Backend:
    """SAM 3 over a loaded model, one predictor (and so one text cache) per process."""

    def __init__(self, models: Sam3Models, *, prompt_batch: int) -> None:
        self.models = models
        self.predictor = Sam3Predictor(models, prompt_batch=prompt_batch)

    @property
    def spec(self) -> BackendSpec:
        return SPEC

    @property
    def device(self) -> torch.device:
        return self.models.device

    @property
    def is_tiny(self) -> bool:
        return self.models.is_tiny

    @property
    def encoder_passes(self) -> int:
        """Images through SAM 3's vision encoder so far (one per image, whatever the taxonomy)."""
        return self.predictor.encoder_passes

    def text_limits(self) -> tuple[TextLimit, ...]:
        """SAM 3's text encoder reads every phrase, thing and stuff, one per prompt."""
        return (
            TextLimit(
                model=MODEL_TITLES[SAM3_SUBDIR],
                things=True,
                stuff=True,
                max_tokens=self.models.text_length,
                count_tokens=self._count_tokens,
            ),
        )

    def _count_tokens(self, phrase: str) -> int:
        return len(self.models.tokenizer(phrase, verbose=False)["input_ids"])

    def open_batch(
        self,
        images: Sequence[Image.Image],
        taxonomy: Taxonomy,
        settings: PipelineSettings,
        clock: StageClock,
    ) -> list[ImageSession]:
        """One vision-encoder call for all ``images``; phrases not seen yet are encoded."""
        things, stuff = thing_queries(taxonomy), stuff_queries(taxonomy)
        with clock("embed"):
            sessions = open_sessions(self.predictor, images)
        with clock("text"):
            self.predictor.prepare_text(phrase_table([*things, *stuff])[0])
        return [_Session(s, things, stuff, settings, clock) for s in sessions]


def thing_queries(taxonomy: Taxonomy) -> tuple[ThingQuery, ...]:
    """The taxonomy's things as SAM 3 prompts: every phrase (synonym) its own prompt, merged
    back to the category, gated by the category's resolved ``score_threshold``."""
    return tuple(
        ThingQuery(p.category_id, p.phrases, p.option("score_threshold")) for p in taxonomy.things
    )


def stuff_queries(taxonomy: Taxonomy) -> tuple[StuffQuery, ...]:
    """The taxonomy's stuff categories as semantic-map prompts (phrases merged by maximum)."""
    return tuple(StuffQuery(p.category_id, p.phrases) for p in taxonomy.stuff)


@dataclass
class _Session:
    """One encoded image of a batch, with the batch's queries and settings."""

    session: Sam3Session
    thing_queries: tuple[ThingQuery, ...]
    stuff_queries: tuple[StuffQuery, ...]
    settings: PipelineSettings
    clock: StageClock

    def things(self) -> list[MaskCandidate]:
        s = self.settings
        with self.clock("things"):
            return self.session.things(
                self.thing_queries,
                nms_iou=s.nms_iou,
                cross_category_iou=s.cross_category_iou,
                max_detections=s.max_detections,
            )

    def stuff(self, things: Sequence[MaskCandidate]) -> list[MaskCandidate]:
        with self.clock("stuff"):
            return self.session.stuff(
                self.stuff_queries,
                [thing.full_mask() for thing in things],
                background_threshold=self.settings.background_threshold,
            )
