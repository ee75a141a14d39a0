"""Stuff masks from a few interior points per CLIPSeg region (``pipeline.stuff_method: regions``).

prelabel's first stuff method, kept as an alternative to the seed's (``stuff_seed``). CLIPSeg's
map is thresholded per category (``mask_threshold``, settable per category), each connected
region of at least ``min_region_fraction`` of the map gets ``points_per_region`` points well
inside it, and SAM's best-IoU mask for each region becomes that category's mask; pixels two
categories claim go to the one CLIPSeg found more probable there.

When to pick it: it labels only what CLIPSeg is fairly sure of and leaves the rest 0, so a
person corrects less that is wrong and draws more that is missing. It runs one SAM decoder call
for all regions instead of one per category. The seed's method labels greedily (a category only
has to beat a 0.1 background) and draws edges between stuff categories with SAM at full
resolution. Compare both on your own labels with ``prelabel evaluate``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from prelabel.backends.grounded_sam.coarse import coarse_labels, sample_region_points, scale_points
from prelabel.backends.grounded_sam.segment import ImageEmbedding, SamSegmenter
from prelabel.config import PipelineSettings
from prelabel.panoptic import MaskCandidate
from prelabel.pipeline.clock import StageClock
from prelabel.taxonomy import CategoryPrompt


def regions_stuff(
    probs: npt.NDArray[np.float32],
    prompts: Sequence[CategoryPrompt],
    embedding: ImageEmbedding,
    segmenter: SamSegmenter,
    settings: PipelineSettings,
    clock: StageClock,
) -> list[MaskCandidate]:
    """Stuff mask candidates from CLIPSeg's ``(P, h, w)`` probabilities, at the embedded size.

    A candidate's score is the highest mean CLIPSeg probability among its regions.
    """
    height, width = embedding.original_size
    with clock("coarse"):
        labels = coarse_labels(probs, [p.option("mask_threshold") for p in prompts])
        map_h, map_w = labels.shape
        regions = sample_region_points(
            labels,
            probs,
            points_per_region=settings.points_per_region,
            min_region_pixels=round(settings.min_region_fraction * map_h * map_w),
            max_regions=settings.max_regions_per_category,
        )
    if not regions:
        return []
    with clock("stuff"):
        point_sets = [scale_points(r.points, (map_w, map_h), (width, height)) for r in regions]
        refined = segmenter.segment_points(embedding, point_sets)
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
