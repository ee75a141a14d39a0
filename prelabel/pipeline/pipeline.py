"""``Pipeline.predict(image, taxonomy) -> PanopticPrediction``: wires the stages, no I/O.

Order per image: Grounding DINO boxes for things -> one SAM embedding -> SAM box masks ->
CLIPSeg maps for stuff -> SAM point masks from the same embedding (``pipeline.stuff_method``:
the seed's algorithm in :mod:`~prelabel.pipeline.stuff_seed`, or the per-region one in
:mod:`~prelabel.pipeline.stuff_regions`) -> panoptic merge at the original size. Models are
built once and reused for every image.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from prelabel.config import PipelineSettings, Settings
from prelabel.images import WorkingImage, fit_within
from prelabel.panoptic import MaskCandidate, PanopticPrediction
from prelabel.pipeline.clock import StageClock, Timings
from prelabel.pipeline.coarse import StuffSegmenter
from prelabel.pipeline.detect import Detections, ThingDetector
from prelabel.pipeline.loading import LoadedModels, load_models
from prelabel.pipeline.merge import merge_panoptic
from prelabel.pipeline.segment import ImageEmbedding, SamSegmenter
from prelabel.pipeline.stuff_regions import regions_stuff
from prelabel.pipeline.stuff_seed import seed_stuff
from prelabel.taxonomy import CategoryPrompt, Taxonomy


class Pipeline:
    """The zero-shot panoptic pipeline over already-loaded models."""

    def __init__(self, models: LoadedModels, settings: PipelineSettings) -> None:
        self.models = models
        self.settings = settings
        self.detector = ThingDetector(
            models.grounding_dino, models.grounding_dino_processor, models.device
        )
        self.segmenter = SamSegmenter(models.sam, models.sam_processor, models.device)
        self.stuff = StuffSegmenter(models.clipseg, models.clipseg_processor, models.device)

    @classmethod
    def load(cls, settings: Settings, models_dir: Path | None = None) -> Pipeline:
        """Load the three models (see :func:`~prelabel.pipeline.loading.load_models`)."""
        return cls(load_models(settings.models, models_dir), settings.pipeline)

    def predict(
        self, image: Image.Image, taxonomy: Taxonomy, *, timings: Timings | None = None
    ) -> PanopticPrediction:
        """Panoptic map of an RGB image, at the image's own size.

        ``timings``, when given, accumulates seconds per stage (``detect``, ``embed``,
        ``things``, ``coarse``, ``stuff``, ``merge``) for benchmarks.
        """
        (prediction,) = self.predict_batch([image], taxonomy, timings=timings)
        return prediction

    def predict_batch(
        self, images: Sequence[Image.Image], taxonomy: Taxonomy, *, timings: Timings | None = None
    ) -> list[PanopticPrediction]:
        """:meth:`predict` for several images, with one Grounding DINO call (per prompt chunk)
        and one SAM encoder call for all of them: what keeps a GPU busy. Prompt decoding,
        CLIPSeg and the merge stay per image. Same results as one image at a time."""
        workings = [self.working_image(image) for image in images]
        device = self.models.device
        clock = StageClock(timings, cuda=device if device.type == "cuda" else None)
        with clock("detect"):
            detections = self.detector.detect_batch(
                [w.image for w in workings],
                taxonomy.things,
                nms_iou=self.settings.nms_iou,
                cross_category_iou=self.settings.cross_category_iou,
                max_detections=self.settings.max_detections,
            )
        with clock("embed"):
            embeddings = self.segmenter.embed_batch([w.image for w in workings])
        predictions = []
        for working, found, embedding in zip(workings, detections, embeddings, strict=True):
            with clock("things"):
                candidates = self.thing_candidates(embedding, found)
            if taxonomy.stuff:
                things = [c.mask for c in candidates]
                candidates.extend(
                    self.stuff_candidates(working.image, taxonomy.stuff, things, embedding, clock)
                )
            with clock("merge"):
                predictions.append(
                    merge_panoptic(
                        candidates,
                        min_area=self.settings.min_area,
                        output_size=working.original_size,
                    )
                )
        return predictions

    def working_image(self, image: Image.Image) -> WorkingImage:
        """The image the models see: RGB checked, downscaled to ``max_image_side``."""
        if image.mode != "RGB":
            raise ValueError(f"expected an RGB image, got mode {image.mode}; use decode_image()")
        return fit_within(image, self.settings.max_image_side)

    def detect_things(
        self, image: Image.Image, embedding: ImageEmbedding, taxonomy: Taxonomy, clock: StageClock
    ) -> list[MaskCandidate]:
        """The thing branch for one working image: Grounding DINO boxes -> SAM box masks."""
        with clock("detect"):
            (found,) = self.detector.detect_batch(
                [image],
                taxonomy.things,
                nms_iou=self.settings.nms_iou,
                cross_category_iou=self.settings.cross_category_iou,
                max_detections=self.settings.max_detections,
            )
        with clock("things"):
            return self.thing_candidates(embedding, found)

    def thing_candidates(self, embedding: ImageEmbedding, found: Detections) -> list[MaskCandidate]:
        """SAM masks of detected boxes, as thing candidates in detection order."""
        masks = self.segmenter.segment_boxes(embedding, found.boxes)
        return [
            MaskCandidate(mask=m, category_id=int(c), score=float(s), is_thing=True)
            for m, c, s in zip(masks.masks, found.category_ids, found.scores, strict=True)
        ]

    def stuff_candidates(
        self,
        image: Image.Image,
        prompts: tuple[CategoryPrompt, ...],
        things: Sequence[npt.NDArray[np.bool_]],
        embedding: ImageEmbedding,
        clock: StageClock,
    ) -> list[MaskCandidate]:
        """The stuff branch by ``settings.stuff_method``; ``things`` are the ``(H, W)`` thing
        masks whose pixels the seed method takes away from stuff."""
        settings, segmenter = self.settings, self.segmenter
        if settings.stuff_method == "regions":
            with clock("coarse"):
                probs = self.stuff.probabilities(image, prompts)
            return regions_stuff(probs, prompts, embedding, segmenter, settings, clock)
        with clock("coarse"):
            logits = self.stuff.logits(image, prompts)
        union = functools.reduce(np.logical_or, things) if things else None
        return seed_stuff(logits, prompts, union, embedding, segmenter, settings, clock)
