"""SAM 2's image and mask conversions, written here because transformers' need torchvision.

transformers' ``Sam2VideoProcessor`` and SAM 2 image processors import torchvision, which this
project does not install (shared/model-stack.md section 8), so the three small conversions the
video model needs are done here with PIL and torch:

- :func:`frame_pixel_values`: an RGB frame -> ``(3, S, S)`` ``pixel_values``: resized to the
  model's square ``S`` (1024 for the released checkpoints) with bilinear filtering, aspect
  ratio not kept and no padding, scaled by 1/255 and normalised with ImageNet's mean and std.
- :func:`prompt_mask`: a boolean mask at the frame's size -> the ``(1, 1, S, S)`` float mask
  prompt the session stores (bilinear with antialiasing, then >= 0.5), as the processor does.
- :func:`upscale_masks`: the model's low-resolution mask logits (``S / 4`` square) -> boolean
  masks at the frame's size: bilinear upscaling (``align_corners=False``), then logits > 0.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "frame_pixel_values", "prompt_mask", "upscale_masks"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def frame_pixel_values(image: Image.Image, size: int) -> torch.Tensor:
    """``(3, size, size)`` float32 ``pixel_values`` of an RGB image (see the module docstring)."""
    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {image.mode}")
    resized = image.resize((size, size), Image.Resampling.BILINEAR)
    array = torch.from_numpy(np.asarray(resized, dtype=np.float32) / np.float32(255.0))
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)
    return ((array - mean) / std).permute(2, 0, 1).contiguous()


def prompt_mask(mask: npt.NDArray[np.bool_], size: int) -> torch.Tensor:
    """A ``(H, W)`` bool mask as the session's ``(1, 1, size, size)`` float 0/1 mask prompt."""
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    if tensor.shape[-2:] != (size, size):
        tensor = F.interpolate(
            tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        tensor = (tensor >= 0.5).float()
    return tensor


def upscale_masks(logits: torch.Tensor, size: tuple[int, int]) -> npt.NDArray[np.bool_]:
    """``(N, h, w)`` (or ``(N, 1, h, w)``) mask logits -> ``(N, height, width)`` bool masks.

    ``size`` is ``(height, width)``. Computed in float32 on the logits' device.
    """
    if logits.dim() == 3:
        logits = logits[:, None]
    if logits.dim() != 4 or logits.shape[1] != 1:
        raise ValueError(f"expected (N, h, w) or (N, 1, h, w) logits, got {tuple(logits.shape)}")
    if len(logits) == 0:
        return np.zeros((0, *size), dtype=bool)
    full = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
    return (full[:, 0] > 0).cpu().numpy()
