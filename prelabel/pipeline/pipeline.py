"""``Pipeline.predict(image, taxonomy) -> PanopticPrediction``: wires the stages, no I/O.

Order per image: Grounding DINO boxes for things -> one SAM embedding -> SAM box masks ->
CLIPSeg maps for stuff -> SAM point masks from the same embedding -> panoptic merge at the
original size. Models are built once and reused for every image.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from prelabel.config import PipelineSettings, Settings
from prelabel.images import fit_within
from prelabel.panoptic import MaskCandidate, PanopticPrediction
from prelabel.pipeline.coarse import (
    StuffSegmenter,
    coarse_labels,
    sample_region_points,
    scale_points,
)
from prelabel.pipeline.detect import ThingDetector
from prelabel.pipeline.loading import LoadedModels, load_models
from prelabel.pipeline.merge import merge_panoptic
from prelabel.pipeline.segment import ImageEmbedding, SamSegmenter
from prelabel.taxonomy import CategoryPrompt, Taxonomy

Timings = MutableMapping[str, float]


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
        for image in images:
            if image.mode != "RGB":
                raise ValueError(
                    f"expected an RGB image, got mode {image.mode}; use decode_image()"
                )
        workings = [fit_within(image, self.settings.max_image_side) for image in images]
        device = self.models.device
        clock = _Clock(timings, cuda=device if device.type == "cuda" else None)
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
            candidates: list[MaskCandidate] = []
            with clock("things"):
                masks = self.segmenter.segment_boxes(embedding, found.boxes)
                candidates.extend(
                    MaskCandidate(mask=m, category_id=int(c), score=float(s), is_thing=True)
                    for m, c, s in zip(masks.masks, found.category_ids, found.scores, strict=True)
                )
            if taxonomy.stuff:
                candidates.extend(self._stuff(working.image, taxonomy.stuff, embedding, clock))
            with clock("merge"):
                predictions.append(
                    merge_panoptic(
                        candidates,
                        min_area=self.settings.min_area,
                        output_size=working.original_size,
                    )
                )
        return predictions

    def _stuff(
        self,
        image: Image.Image,
        prompts: tuple[CategoryPrompt, ...],
        embedding: ImageEmbedding,
        clock: _Clock,
    ) -> list[MaskCandidate]:
        with clock("coarse"):
            probs = self.stuff.probabilities(image, prompts)
            labels = coarse_labels(probs, [p.mask_threshold for p in prompts])
            map_h, map_w = labels.shape
            regions = sample_region_points(
                labels,
                probs,
                points_per_region=self.settings.points_per_region,
                min_region_pixels=round(self.settings.min_region_fraction * map_h * map_w),
                max_regions=self.settings.max_regions_per_category,
            )
        if not regions:
            return []
        with clock("stuff"):
            point_sets = [scale_points(r.points, (map_w, map_h), image.size) for r in regions]
            refined = self.segmenter.segment_points(embedding, point_sets)
            per_prompt = _union_by_prompt(refined.masks, [r.prompt_index for r in regions])
            _resolve_stuff_overlaps(per_prompt, probs)
            return [
                MaskCandidate(
                    mask=mask,
                    category_id=prompts[index].category_id,
                    score=max(r.score for r in regions if r.prompt_index == index),
                    is_thing=False,
                )
                for index, mask in per_prompt.items()
            ]


def _union_by_prompt(
    masks: npt.NDArray[np.bool_], prompt_indices: list[int]
) -> dict[int, npt.NDArray[np.bool_]]:
    union: dict[int, npt.NDArray[np.bool_]] = {}
    for mask, index in zip(masks, prompt_indices, strict=True):
        if index in union:
            union[index] |= mask
        else:
            union[index] = mask.copy()
    return union


def _resolve_stuff_overlaps(
    masks: dict[int, npt.NDArray[np.bool_]], probs: npt.NDArray[np.float32]
) -> None:
    """Give a pixel claimed by several stuff masks to the prompt CLIPSeg found most probable there.

    Only contested pixels are looked up, in the low-resolution map by nearest neighbour, so the
    full-size probability maps are never built. Mutates ``masks``.
    """
    if len(masks) < 2:
        return
    order = list(masks)
    stack = np.stack([masks[i] for i in order])
    contested = stack.sum(axis=0) > 1
    if not contested.any():
        return
    rows, cols = np.nonzero(contested)
    height, width = contested.shape
    map_h, map_w = probs.shape[1:]
    low_rows, low_cols = rows * map_h // height, cols * map_w // width
    claims = np.stack([masks[i][rows, cols] for i in order])
    scores = np.where(claims, probs[order][:, low_rows, low_cols], -1.0)
    winner = scores.argmax(axis=0)
    for slot, index in enumerate(order):
        masks[index][rows, cols] = winner == slot


class _Clock:
    """Adds stage durations into an optional mapping; free when none is given.

    On CUDA kernels run asynchronously: without a synchronize at each boundary a stage whose
    result stays on the GPU (the SAM embedding) would be charged to the next stage that copies
    to the CPU. It only synchronizes when timings are asked for.
    """

    def __init__(self, timings: Timings | None, cuda: torch.device | None = None) -> None:
        self.timings = timings
        self.cuda = cuda

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        if self.timings is None:
            yield
            return
        self._sync()
        start = time.perf_counter()
        try:
            yield
            self._sync()
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start

    def _sync(self) -> None:
        if self.cuda is not None:
            torch.cuda.synchronize(self.cuda)
