"""One working image's SAM 3 features, asked for things and stuff: what the back-end adapter
wraps behind the seam's ``ImageSession``.

:func:`open_sessions` runs the vision encoder once for a batch of images; each
:class:`Sam3Session` then answers :meth:`~Sam3Session.things` (keyframes and images) and
:meth:`~Sam3Session.stuff` (every frame) from those features, with the predictor's cached text
embeddings and prompt batches. Masks are at the working image's size.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image

from prelabel.backends.sam3.candidates import (
    StuffQuery,
    ThingQuery,
    phrase_table,
    stuff_candidates,
    thing_candidates,
    thing_thresholds,
)
from prelabel.backends.sam3.predictor import ImageFeatures, Sam3Predictor
from prelabel.panoptic import MaskCandidate

__all__ = ["Sam3Session", "open_sessions"]


class Sam3Session:
    """Things and stuff of one encoded image."""

    def __init__(self, predictor: Sam3Predictor, features: ImageFeatures) -> None:
        self.predictor = predictor
        self.features = features

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the working image (and of every mask returned)."""
        return self.features.size

    def things(
        self,
        queries: Sequence[ThingQuery],
        *,
        nms_iou: float,
        cross_category_iou: float,
        max_detections: int,
    ) -> list[MaskCandidate]:
        """Thing candidates: one prompt per phrase, per-category score gates, the grounded
        pipeline's NMS rules (:func:`~.candidates.thing_candidates`)."""
        phrases, _ = phrase_table(queries)
        if not phrases:
            return []
        found = self.predictor.instances(self.features, phrases, thing_thresholds(queries))
        return thing_candidates(
            found,
            queries,
            nms_iou=nms_iou,
            cross_category_iou=cross_category_iou,
            max_detections=max_detections,
        )

    def stuff(
        self,
        queries: Sequence[StuffQuery],
        thing_masks: Sequence[npt.NDArray[np.bool_]],
        *,
        background_threshold: float,
    ) -> list[MaskCandidate]:
        """Stuff candidates from the semantic head, thing pixels removed
        (:func:`~.candidates.stuff_candidates`)."""
        phrases, _ = phrase_table(queries)
        if not phrases:
            return []
        logits = self.predictor.semantic_logits(self.features, phrases)
        union = functools.reduce(np.logical_or, thing_masks) if thing_masks else None
        return stuff_candidates(
            logits,
            queries,
            size=self.size,
            things=union,
            background_threshold=background_threshold,
        )


def open_sessions(predictor: Sam3Predictor, images: Sequence[Image.Image]) -> list[Sam3Session]:
    """One vision-encoder pass for ``images``; a session per image."""
    return [Sam3Session(predictor, features) for features in predictor.encode(images)]
