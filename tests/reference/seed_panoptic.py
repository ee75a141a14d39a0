"""The seed demo's stuff algorithm, ported from the notes (seed-algorithm.md steps 2 to 4).

This is the yardstick for prelabel's ``pipeline.stuff_method: seed``, so it is separate code on
purpose: it imports transformers' model classes, torch, numpy and scipy, and nothing from
``prelabel.pipeline``. Where prelabel takes a shortcut, this port takes the demo's plain road:

- CLIPSeg runs as the demo runs it, ``model(**processor(text=names, images=[image] * n,
  padding="max_length"))``: one vision pass per category (prelabel shares one vision pass).
- All probability maps are upscaled together and stacked, and each argmax runs over the stack
  (prelabel keeps a running maximum, one map at a time).
- Erosion is ``scipy.ndimage.binary_erosion`` with a square structure, as in the demo
  (prelabel uses an equivalent separable minimum filter).
- SAM's prompt coordinates are scaled with segment-anything's ``ResizeLongestSide`` arithmetic
  and its masks upscaled with two ``F.interpolate`` calls written out here (prelabel uses the
  processor's sizes and ``post_process_masks``).

The demo's point draw (``random.choices``) is replaced by the exact formula prelabel specifies,
``numpy.random.default_rng([seed, category_id]).choice(H * W, size=N, p=w / w[eroded].sum())``,
so that the two implementations draw the same points and can be compared pixel for pixel. The
total is the sum of the eroded pixels' weights in row-major order rather than ``w.sum()`` (the
two may differ in the last bit): that lets prelabel draw from the region alone (issue 23).

The port runs on whatever device its models are on (the GPU suite's baseline runs it there);
its maps come to host memory as numpy arrays. Things are not detected here: the caller passes
the union of the thing masks it kept, so both stuff branches see the same things. ``noise``
adds uniform noise of that amplitude to the probability maps of the models named in
``noise_on`` (CLIPSeg's, SAM's or both), to measure how stable the port's own output is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage


@dataclass(frozen=True)
class SeedKnobs:
    """The demo's knobs for the stuff branch, with the demo's defaults."""

    background_threshold: float = 0.1
    shrink_kernel: int = 20
    num_samples_factor: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class SeedStuff:
    """The port's output for one image, all ``(H, W)`` at the image's size.

    ``category_map`` holds the winning stuff category id per pixel (0 = none); ``points``
    the number of SAM points each category id got (0 = skipped, its SAM map stayed 0).
    """

    category_map: npt.NDArray[np.int64]
    coarse_map: npt.NDArray[np.int64]
    points: dict[int, int]


@torch.inference_mode()
def seed_stuff(
    image: Image.Image,
    stuff: Sequence[tuple[int, str]],
    things: npt.NDArray[np.bool_] | None,
    *,
    clipseg: Any,
    clipseg_processor: Any,
    sam: Any,
    sam_processor: Any,
    knobs: SeedKnobs,
    noise: float = 0.0,
    noise_on: frozenset[str] = frozenset({"clipseg", "sam"}),
    noise_seed: int = 0,
) -> SeedStuff:
    """Stuff category per pixel for ``stuff`` = ``[(category id, name), ...]``."""
    width, height = image.size
    ids = np.array([0] + [cid for cid, _ in stuff], dtype=np.int64)
    noise_rng = np.random.default_rng(noise_seed)

    def jitter(maps: npt.NDArray[np.float32], model: str) -> npt.NDArray[np.float32]:
        if noise == 0 or model not in noise_on:
            return maps
        shaken = maps + noise_rng.uniform(-noise, noise, maps.shape).astype(np.float32)
        return np.clip(shaken, 0.0, 1.0)

    # Step 2: CLIPSeg, upscaled bilinearly to the image size first, then the sigmoid.
    names = [name for _, name in stuff]
    inputs = clipseg_processor(
        text=names, images=[image] * len(names), padding="max_length", return_tensors="pt"
    )
    parameter = next(clipseg.parameters())
    inputs = {key: value.to(parameter.device) for key, value in inputs.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(parameter.dtype)
    logits = clipseg(**inputs).logits.float()
    if logits.ndim == 2:
        logits = logits[None]
    upscaled = F.interpolate(
        logits[:, None], size=(height, width), mode="bilinear", align_corners=False
    )
    preds = jitter(torch.sigmoid(upscaled[:, 0]).cpu().numpy(), "clipseg")
    coarse = _semantic(preds, knobs.background_threshold)

    # Step 3: things carved out, regions shrunk, relative sizes, clipped maps.
    carved = coarse.copy()
    if things is not None:
        carved[things] = 0
    eroded = []
    for index in range(1, len(stuff) + 1):
        mask = carved == index
        if knobs.shrink_kernel > 0:
            structure = np.ones((knobs.shrink_kernel, knobs.shrink_kernel), dtype=bool)
            mask = ndimage.binary_erosion(mask, structure=structure)
        eroded.append(mask)
    sizes = [int(mask.sum()) for mask in eroded]
    largest = max(sizes)
    relative = [size / largest for size in sizes] if largest > 0 else [0.0] * len(sizes)
    clipped = preds * np.stack(eroded).astype(np.float32)

    # Step 4: points per category, one SAM prompt each, max over the three masks.
    pixel_values = sam_processor(images=image, return_tensors="pt")["pixel_values"]
    sam_parameter = next(sam.parameters())
    embedding = sam.get_image_embeddings(pixel_values.to(sam_parameter.device, sam_parameter.dtype))
    side = int(sam.config.vision_config.image_size)
    scale = side / max(height, width)
    new_h, new_w = int(height * scale + 0.5), int(width * scale + 0.5)
    sam_preds = np.zeros_like(preds)
    points: dict[int, int] = {}
    for index, (category_id, _) in enumerate(stuff):
        count = int(relative[index] * knobs.num_samples_factor)
        points[category_id] = count
        if count == 0:
            continue
        weights = clipped[index].astype(np.float64).ravel()
        total = weights[eroded[index].ravel()].sum()
        rng = np.random.default_rng([knobs.seed, category_id])
        flat = rng.choice(height * width, size=count, replace=True, p=weights / total)
        xy = np.stack([flat % width, flat // width], axis=1).astype(np.float64)
        xy = xy * np.array([new_w / width, new_h / height])
        out = sam(
            image_embeddings=embedding,
            input_points=torch.tensor(xy, dtype=embedding.dtype, device=embedding.device)[
                None, None
            ],
            input_labels=torch.ones((1, 1, count), dtype=torch.long, device=embedding.device),
            multimask_output=True,
        )
        low_res = torch.sigmoid(out.pred_masks[0, 0].float()).max(dim=0).values
        padded = F.interpolate(
            low_res[None, None], size=(side, side), mode="bilinear", align_corners=False
        )
        full = F.interpolate(
            padded[..., :new_h, :new_w], size=(height, width), mode="bilinear", align_corners=False
        )
        sam_preds[index] = full[0, 0].cpu().numpy()
    final = _semantic(jitter(sam_preds, "sam"), knobs.background_threshold)
    return SeedStuff(category_map=ids[final], coarse_map=ids[coarse], points=points)


def _semantic(preds: npt.NDArray[np.float32], background: float) -> npt.NDArray[np.int64]:
    """Index per pixel of the highest of ``[background, preds...]``; ties to the first."""
    background_map = np.full((1, *preds.shape[1:]), background, dtype=np.float32)
    return np.concatenate([background_map, preds]).argmax(axis=0)
