"""SAM 3's pre- and post-processing, written here because transformers' needs torchvision.

``Sam3ImageProcessor`` imports torchvision at module level (for the automatic mask generator's
NMS), and this project installs none (shared/model-stack.md section 8). What it does for text
prompts is small and is redone here, formula for formula:

- :func:`pixel_values`: each RGB image resized to the model's square (1008 for the released
  model; aspect ratio not kept, no padding) with bilinear filtering, scaled by 1/255, normalised
  with mean and std 0.5. PIL's resize stands in for torchvision's (both filter with antialiasing
  when shrinking; they can differ by a grey level at edges).
- :func:`select_instances`: transformers' ``post_process_instance_segmentation`` for one
  prompt: score = sigmoid(class logit) x sigmoid(presence logit), kept when strictly above the
  threshold; mask probabilities (sigmoid of the logits) upscaled bilinearly
  (``align_corners=False``) to the image, then > 0.5; boxes (xyxy, relative) times the image's
  width and height, not clipped.
- :func:`semantic_probabilities`: ``post_process_semantic_segmentation``'s scores: sigmoid of
  the semantic logits, then bilinear (``align_corners=False``) to the image size.

Everything stays on the tensors' device; the caller moves results to the host once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from prelabel.backends.sam3.loading import IMAGE_MEAN, IMAGE_STD

__all__ = [
    "MASK_THRESHOLD",
    "SelectedInstances",
    "instance_scores",
    "pixel_values",
    "select_instances",
    "semantic_probabilities",
]

#: transformers' default ``mask_threshold`` for mask probabilities.
MASK_THRESHOLD = 0.5


def pixel_values(images: Sequence[Image.Image], side: int) -> torch.Tensor:
    """``(B, 3, side, side)`` float32 model input of RGB images (see the module docstring)."""
    mean = torch.tensor(IMAGE_MEAN, dtype=torch.float32)
    std = torch.tensor(IMAGE_STD, dtype=torch.float32)
    batch = []
    for image in images:
        if image.mode != "RGB":
            raise ValueError(f"expected an RGB image, got mode {image.mode}")
        resized = image.resize((side, side), Image.Resampling.BILINEAR)
        array = torch.from_numpy(np.asarray(resized, dtype=np.float32) / np.float32(255.0))
        batch.append(((array - mean) / std).permute(2, 0, 1))
    return torch.stack(batch).contiguous()


def instance_scores(pred_logits: torch.Tensor, presence_logits: torch.Tensor) -> torch.Tensor:
    """``(..., Q)`` query scores: sigmoid(class logit) x sigmoid(presence logit), in float32;
    ``presence_logits`` is ``(..., 1)`` and broadcasts over the queries."""
    return pred_logits.float().sigmoid() * presence_logits.float().sigmoid()


@dataclass(frozen=True)
class SelectedInstances:
    """One prompt's instances on the model's device: ``masks`` ``(N, H, W)`` bool at the image
    size, ``boxes`` ``(N, 4)`` xyxy pixels, ``scores`` ``(N,)``, in query order."""

    masks: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor


def select_instances(
    pred_logits: torch.Tensor,
    presence_logit: torch.Tensor,
    pred_boxes: torch.Tensor,
    pred_masks: torch.Tensor,
    *,
    threshold: float,
    size: tuple[int, int],
) -> SelectedInstances:
    """One prompt's outputs (``(Q,)``, ``(1,)``, ``(Q, 4)``, ``(Q, h, w)``) -> its instances at
    ``size`` = ``(height, width)``, as transformers' post-processing makes them."""
    scores = instance_scores(pred_logits, presence_logit)
    keep = scores > threshold
    height, width = size
    scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=scores.device)
    boxes = pred_boxes.float()[keep] * scale
    probabilities = pred_masks.float().sigmoid()[keep]
    if len(probabilities):
        probabilities = F.interpolate(
            probabilities[None], size=size, mode="bilinear", align_corners=False
        )[0]
    else:
        probabilities = probabilities.new_zeros((0, height, width))
    return SelectedInstances(masks=probabilities > MASK_THRESHOLD, boxes=boxes, scores=scores[keep])


def semantic_probabilities(semantic_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(P, h, w)`` (or ``(P, 1, h, w)``) semantic logits -> ``(P, H, W)`` float32
    probabilities at ``size`` = ``(height, width)``: sigmoid first, then bilinear."""
    if semantic_logits.dim() == 3:
        semantic_logits = semantic_logits[:, None]
    probabilities = semantic_logits.float().sigmoid()
    return F.interpolate(probabilities, size=size, mode="bilinear", align_corners=False)[:, 0]
