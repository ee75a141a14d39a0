"""The ``grounded_sam`` back-end: Grounding DINO boxes for things, one SAM embedding per image,
SAM box masks, CLIPSeg maps for stuff and SAM point masks from the same embedding.

Order per batch: one SAM encoder call for all images when the batch opens; the first
:meth:`~_Session.things` call of the batch runs the detector once (per prompt chunk) for every
image of the batch, which keeps a GPU busy; SAM box masks, CLIPSeg and the stuff points stay
per image (``pipeline.stuff_method``: the seed's algorithm in :mod:`.stuff_seed`, its point
prompts in padded calls of several categories each, or the
per-region one in :mod:`.stuff_regions`). Same results as one image at a time.

Thing masks stay on the model's device until the merge needs them: a thing candidate holds only
its mask's tight window (:mod:`.thing_masks`), and the seed stuff method rebuilds the union of
the things it is told on the device from those crops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

from prelabel.backends.base import BackendSpec, ImageSession, TextLimit
from prelabel.backends.grounded_sam.coarse import StuffSegmenter
from prelabel.backends.grounded_sam.detect import ThingDetector
from prelabel.backends.grounded_sam.loading import LoadedModels
from prelabel.backends.grounded_sam.preprocess import DeviceImage, device_images
from prelabel.backends.grounded_sam.segment import ImageEmbedding, SamSegmenter
from prelabel.backends.grounded_sam.spec import SPEC
from prelabel.backends.grounded_sam.stuff_regions import regions_stuff
from prelabel.backends.grounded_sam.stuff_seed import seed_stuff
from prelabel.backends.loading import MODEL_TITLES
from prelabel.config import PipelineSettings
from prelabel.panoptic import MaskCandidate
from prelabel.pipeline.boxes import Detections
from prelabel.pipeline.clock import StageClock
from prelabel.taxonomy import CategoryPrompt, Taxonomy


class GroundedSam:
    """Grounding DINO (or MM Grounding DINO, LLMDet), SAM and CLIPSeg over loaded models."""

    def __init__(self, models: LoadedModels) -> None:
        self.models = models
        self.detector = ThingDetector(
            models.grounding_dino, models.grounding_dino_processor, models.device
        )
        self.segmenter = SamSegmenter(models.sam, models.sam_processor, models.device)
        self.stuff = StuffSegmenter(models.clipseg, models.clipseg_processor, models.device)

    @property
    def spec(self) -> BackendSpec:
        return SPEC

    @property
    def device(self) -> torch.device:
        return self.models.device

    @property
    def is_tiny(self) -> bool:
        return self.models.is_tiny

    def text_limits(self) -> tuple[TextLimit, ...]:
        """Grounding DINO reads the thing phrases (each must fit a query alone; longer prompt
        lists are split into queries), CLIPSeg the stuff phrases."""
        return (
            TextLimit(
                model=MODEL_TITLES["grounding_dino"],
                things=True,
                stuff=False,
                max_tokens=self.detector.max_tokens,
                count_tokens=self.detector.count_phrase_tokens,
            ),
            TextLimit(
                model=MODEL_TITLES["clipseg"],
                things=False,
                stuff=True,
                max_tokens=self.stuff.max_tokens,
                count_tokens=self.stuff.count_tokens,
            ),
        )

    def open_batch(
        self,
        images: Sequence[Image.Image],
        taxonomy: Taxonomy,
        settings: PipelineSettings,
        clock: StageClock,
    ) -> list[ImageSession]:
        """One SAM encoder call for all ``images``; detection waits for the first ``things``.

        Each image goes to the model's device once, as ``uint8``; the three models' inputs are
        made from that copy (:mod:`.preprocess`)."""
        with clock("embed"):
            on_device = device_images(images, self.device)
            embeddings = self.segmenter.embed_batch(on_device)
        batch = _Batch(self, on_device, taxonomy, settings, clock)
        return [_Session(batch, i, e) for i, e in enumerate(embeddings)]

    def detect_batch(
        self,
        images: Sequence[Image.Image | DeviceImage],
        prompts: Sequence[CategoryPrompt],
        s: PipelineSettings,
    ) -> list[Detections]:
        """The detector's boxes for ``images``, after the shared NMS rules."""
        return self.detector.detect_batch(
            images,
            prompts,
            nms_iou=s.nms_iou,
            cross_category_iou=s.cross_category_iou,
            max_detections=s.max_detections,
        )

    def thing_candidates(self, embedding: ImageEmbedding, found: Detections) -> list[MaskCandidate]:
        """SAM masks of detected boxes, as thing candidates in detection order, each mask cut
        to its tight window (``origin`` and ``frame`` set)."""
        masks = self.segmenter.box_crops(embedding, found.boxes)
        return [
            MaskCandidate(
                mask=crop,
                category_id=int(c),
                score=float(s),
                is_thing=True,
                box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                origin=origin,
                frame=masks.frame,
            )
            for crop, origin, c, s, b in zip(
                masks.crops,
                masks.origins,
                found.category_ids,
                found.scores,
                found.boxes,
                strict=True,
            )
        ]

    def stuff_candidates(
        self,
        image: Image.Image | DeviceImage,
        prompts: tuple[CategoryPrompt, ...],
        things: Sequence[MaskCandidate],
        embedding: ImageEmbedding,
        settings: PipelineSettings,
        clock: StageClock,
    ) -> list[MaskCandidate]:
        """The stuff branch by ``settings.stuff_method``; ``things`` are the thing candidates
        (full-size or cropped) whose pixels the seed method takes away from stuff."""
        if settings.stuff_method == "regions":
            with clock("coarse"):
                probs = self.stuff.probabilities(image, prompts)
            return regions_stuff(probs, prompts, embedding, self.segmenter, settings, clock)
        with clock("coarse"):
            logits = self.stuff.logits(image, prompts)
        return seed_stuff(logits, prompts, things, embedding, self.segmenter, settings, clock)


@dataclass
class _Batch:
    """The images opened together; detection runs once for all of them, when first asked."""

    backend: GroundedSam
    images: list[DeviceImage]
    taxonomy: Taxonomy
    settings: PipelineSettings
    clock: StageClock
    _detections: list[Detections] | None = field(default=None, init=False)

    def detections(self, index: int) -> Detections:
        if self._detections is None:
            with self.clock("detect"):
                self._detections = self.backend.detect_batch(
                    self.images, self.taxonomy.things, self.settings
                )
        return self._detections[index]


@dataclass
class _Session:
    """One image of a batch and its SAM embedding."""

    batch: _Batch
    index: int
    embedding: ImageEmbedding

    def things(self) -> list[MaskCandidate]:
        found = self.batch.detections(self.index)
        with self.batch.clock("things"):
            return self.batch.backend.thing_candidates(self.embedding, found)

    def stuff(self, things: Sequence[MaskCandidate]) -> list[MaskCandidate]:
        batch = self.batch
        if not batch.taxonomy.stuff:
            return []
        return batch.backend.stuff_candidates(
            batch.images[self.index],
            batch.taxonomy.stuff,
            things,
            self.embedding,
            batch.settings,
            batch.clock,
        )
