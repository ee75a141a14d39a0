"""SAM 3 predictions -> :class:`~prelabel.panoptic.MaskCandidate` lists for the panoptic merge.

Things (:func:`thing_candidates`): every phrase of a category is its own text prompt; its
instances take the category's id (synonyms merge into the category), then the grounded
pipeline's duplicate rules apply unchanged: NMS within a category at ``nms_iou``, then across
categories at ``cross_category_iou``, at most ``max_detections`` kept, highest score first
(:func:`prelabel.pipeline.boxes.suppress_duplicates`). Each kept instance is a thing candidate
with its own mask and score, so the merge's "higher score wins an overlap" decides contested
pixels, as it does for Grounding DINO + SAM.

Stuff (:func:`stuff_candidates`): SAM 3's semantic map per phrase (sigmoid, then bilinear to the
image); a category's map is the pixel-wise maximum over its phrases; per pixel the argmax over
``[background_threshold, each category]`` with ties to background (then to the earlier
category); pixels of any thing mask become background; one candidate per category that keeps
pixels, scored by its mean winning probability. This is step 1-2 of the seed's stuff algorithm
(shared/seed-algorithm.md) with SAM 3's semantic head in place of CLIPSeg; the seed's SAM point
prompts (steps 3-4) are dropped because SAM 3's map is already at mask resolution from the same
model that segments the things, where CLIPSeg's 352 x 352 map needed SAM to find the edges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from prelabel.backends.sam3.predictor import Instances
from prelabel.backends.sam3.processing import semantic_probabilities
from prelabel.panoptic import MaskCandidate
from prelabel.pipeline.boxes import duplicate_survivors

__all__ = [
    "StuffQuery",
    "ThingQuery",
    "phrase_table",
    "stuff_candidates",
    "thing_candidates",
    "thing_thresholds",
]


@dataclass(frozen=True)
class ThingQuery:
    """A thing category: its phrases (each one text prompt) and its instance score gate."""

    category_id: int
    phrases: tuple[str, ...]
    score_threshold: float


@dataclass(frozen=True)
class StuffQuery:
    """A stuff category: its phrases, whose semantic maps are merged by maximum."""

    category_id: int
    phrases: tuple[str, ...]


def phrase_table(queries: Sequence[ThingQuery | StuffQuery]) -> tuple[list[str], list[int]]:
    """Every phrase of every query in order, and for each the index of its query."""
    phrases = [phrase for query in queries for phrase in query.phrases]
    owners = [i for i, query in enumerate(queries) for _ in query.phrases]
    return phrases, owners


def thing_thresholds(queries: Sequence[ThingQuery]) -> list[float]:
    """Each phrase's score threshold (its category's), in :func:`phrase_table` order."""
    return [query.score_threshold for query in queries for _ in query.phrases]


def thing_candidates(
    instances: Sequence[Instances],
    queries: Sequence[ThingQuery],
    *,
    nms_iou: float,
    cross_category_iou: float,
    max_detections: int,
) -> list[MaskCandidate]:
    """One thing candidate per instance that survives the duplicate rules (see the module
    docstring); ``instances`` is per phrase in :func:`phrase_table` order."""
    _, owners = phrase_table(queries)
    if len(instances) != len(owners):
        raise ValueError(f"{len(instances)} phrase results for {len(owners)} phrases")
    category_of = [queries[owner].category_id for owner in owners]
    found = [(inst, category_of[i]) for i, inst in enumerate(instances) if len(inst)]
    if not found:
        return []
    masks = np.concatenate([inst.masks for inst, _ in found])
    boxes = np.concatenate([inst.boxes for inst, _ in found]).astype(np.float32)
    scores = np.concatenate([inst.scores for inst, _ in found]).astype(np.float32)
    categories = np.concatenate([np.full(len(inst), cid, np.int64) for inst, cid in found])
    keep = duplicate_survivors(
        boxes,
        scores,
        categories,
        nms_iou=nms_iou,
        cross_category_iou=cross_category_iou,
        max_detections=max_detections,
    )
    return [
        MaskCandidate(
            mask=masks[i],
            category_id=int(categories[i]),
            score=float(scores[i]),
            is_thing=True,
            box=(float(boxes[i][0]), float(boxes[i][1]), float(boxes[i][2]), float(boxes[i][3])),
        )
        for i in keep
    ]


def stuff_candidates(
    semantic_logits: torch.Tensor,
    queries: Sequence[StuffQuery],
    *,
    size: tuple[int, int],
    things: npt.NDArray[np.bool_] | None,
    background_threshold: float,
) -> list[MaskCandidate]:
    """One stuff candidate per category that wins pixels (see the module docstring).

    ``semantic_logits`` is ``(P, h, w)`` per phrase in :func:`phrase_table` order, on any
    device; ``size`` the working image's ``(height, width)``; ``things`` the union of the thing
    masks there, or None. Works one category at a time against a running maximum, so the ``P``
    full-size maps are never held together; two transfers to the host at the end.
    """
    _, owners = phrase_table(queries)
    if len(semantic_logits) != len(owners):
        raise ValueError(f"{len(semantic_logits)} semantic maps for {len(owners)} phrases")
    device = semantic_logits.device
    best = torch.full(size, float(background_threshold), dtype=torch.float32, device=device)
    labels = torch.zeros(size, dtype=torch.int64, device=device)
    rows = torch.as_tensor(owners, device=device)
    for slot in range(len(queries)):
        phrase_rows = torch.nonzero(rows == slot)[:, 0]
        if len(phrase_rows) == 0:
            continue
        probability = semantic_probabilities(semantic_logits[phrase_rows], size).amax(dim=0)
        labels.masked_fill_(probability > best, slot + 1)
        torch.maximum(best, probability, out=best)
    if things is not None:
        labels.masked_fill_(torch.from_numpy(np.ascontiguousarray(things)).to(device), 0)
    count = len(queries) + 1
    areas = torch.bincount(labels.flatten(), minlength=count)
    totals = torch.bincount(labels.flatten(), weights=best.flatten(), minlength=count)
    label_map = labels.cpu().numpy()
    means = (totals / areas.clamp(min=1)).cpu().numpy()
    return [
        MaskCandidate(
            mask=label_map == slot + 1,
            category_id=query.category_id,
            score=float(means[slot + 1]),
            is_thing=False,
        )
        for slot, query in enumerate(queries)
        if (label_map == slot + 1).any()
    ]
