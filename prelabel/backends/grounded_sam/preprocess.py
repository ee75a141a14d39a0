"""The three models' image preprocessing as tensor ops on the model's device.

The transformers processors resize and normalise each image in PIL and numpy on the host: for a
1920x1080 image that was most of the pipeline's host work (about 0.27 s of 0.35 s per image on a
2-core CPU, ``benchmarks/host_overhead.py``), enough to keep a GPU waiting. Here the image goes to
the device once as ``uint8`` (:class:`DeviceImage`) and each model's input is one antialiased
resize (Pillow's own algorithm, :mod:`.pil_resize`) and one normalisation of that tensor.

The processors stay the reference: :func:`recipe_of` reads the sizes, filter, scale, mean and
std from the loaded processor, and returns ``None`` where it holds anything this path does not
do (another filter, a centre crop, no resize ...); callers then run the processor as before.
The resized pixels equal the processors' bit for bit (torch's own antialiased ``interpolate``
was one level off on up to 14% of pixels, enough to move the seed parity to 0.41); the
normalised values differ by float rounding only (about 7e-7, ``tests/test_preprocess.py``).

Which resize runs is :mod:`.fastest_path`'s decision. On a GPU the integer passes take
milliseconds and keep the host free. On a CPU device they cost more than Pillow's own SIMD code
(the three resizes of a 1920x1080 image: about 0.3 s against 70 ms, one thread), so there
Pillow resizes the RGB image itself: the same pixels by construction, and the processors' cost
without their numpy normalisation.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.image_transforms import get_size_with_aspect_ratio

from prelabel.backends.grounded_sam import pil_resize
from prelabel.backends.grounded_sam.fastest_path import use_host_libraries

#: PIL's filter codes (``PIL.Image.Resampling``) and the :mod:`.pil_resize` modes that match them.
_MODES = {int(Image.Resampling.BILINEAR): "bilinear", int(Image.Resampling.BICUBIC): "bicubic"}
_FILTERS = {mode: Image.Resampling(code) for code, mode in _MODES.items()}


@dataclass(frozen=True)
class DeviceImage:
    """One image and, made on first use, its ``(3, H, W)`` ``uint8`` copy on ``device``: every
    model's input is made from that one copy, so the image crosses to the device once."""

    image: Image.Image
    device: torch.device

    @functools.cached_property
    def rgb(self) -> Image.Image:
        """The image in RGB as the processors make it (:func:`_rgb`)."""
        return _rgb(self.image)

    @functools.cached_property
    def pixels(self) -> torch.Tensor:
        """``(H, W, 3)`` uint8, as the image's own memory is laid out."""
        array = np.array(self.rgb)  # writable, as torch wants
        return torch.from_numpy(array).to(self.device)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.image.height, self.image.width

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``, as ``PIL.Image.size``: code that sizes images reads both alike."""
        return self.image.size


def _rgb(image: Image.Image) -> Image.Image:
    """RGB as the processors' ``convert_to_rgb`` makes it: transparency over white."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode == "RGB":
        return image  # nothing to convert: no copy (nothing here writes to it)
    return image.convert("RGB")


def device_images(
    images: Sequence[Image.Image | DeviceImage], device: torch.device
) -> list[DeviceImage]:
    """``images`` as :class:`DeviceImage` (those that already are pass through)."""
    return [i if isinstance(i, DeviceImage) else DeviceImage(i, device) for i in images]


@dataclass(frozen=True)
class Recipe:
    """What a processor does to an image after choosing its size: filter, rescale, normalise."""

    mode: str
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def recipe_of(processor: Any) -> Recipe | None:
    """The resize-and-normalise steps of an image processor, or ``None`` if it does more or other
    (then the caller runs the processor itself)."""
    mode = _MODES.get(int(getattr(processor, "resample", -1) or -1))
    plain = (
        mode is not None
        and getattr(processor, "do_resize", False)
        and getattr(processor, "do_rescale", False)
        and getattr(processor, "do_normalize", False)
        and not getattr(processor, "do_center_crop", False)
        and getattr(processor, "do_convert_rgb", True) is not False
    )
    mean, std = _triple(getattr(processor, "image_mean", None)), _triple(processor.image_std)
    if not plain or mean is None or std is None:
        return None
    assert mode is not None
    return Recipe(mode=mode, scale=float(processor.rescale_factor), mean=mean, std=std)


def _triple(values: Any) -> tuple[float, float, float] | None:
    if values is None:
        return None
    flat = [float(v) for v in (values if isinstance(values, list | tuple) else [values] * 3)]
    return (flat[0], flat[1], flat[2]) if len(flat) == 3 else None


def resize_normalise(
    image: DeviceImage, size: tuple[int, int], recipe: Recipe, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``(3, h, w)`` float32: ``image`` resized to ``size`` with the antialiased filter, rounded
    to ``uint8`` levels as PIL's resize returns them, then rescaled and normalised; written
    into ``out`` (a ``(3, h, w)`` float32 view, e.g. of a padded batch) when given.

    Two exact forms (:mod:`.fastest_path`). On a device, ``(level * scale - mean) / std`` in
    place, one step after another. On a CPU, where those are four passes over fresh memory, a
    lookup in the table of the 256 levels per channel made by those very steps
    (:func:`level_table`): the same values bit for bit, one ``numpy.take`` per channel."""
    pixels = resized(image, size, recipe.mode)
    if out is None:
        out = torch.empty((3, *size), dtype=torch.float32, device=pixels.device)
    if use_host_libraries(pixels.device):
        levels, planes = level_table(recipe, pixels.device).numpy(), out.numpy()
        for channel in range(3):
            np.take(levels[channel], pixels.numpy()[..., channel], out=planes[channel], mode="clip")
        return out
    mean = torch.tensor(recipe.mean, device=pixels.device).view(3, 1, 1)
    std = torch.tensor(recipe.std, device=pixels.device).view(3, 1, 1)
    # in place in ``out``: the same values as out-of-place steps, without more allocations
    return out.copy_(pixels.permute(2, 0, 1)).mul_(recipe.scale).sub_(mean).div_(std)


def level_table(recipe: Recipe, device: torch.device) -> torch.Tensor:
    """``(3, 256)`` float32: each ``uint8`` level of each channel rescaled and normalised as
    :func:`resize_normalise` does it on a device, ``(level * scale - mean) / std`` in float32,
    one rounding per step (the steps run one after another, so nothing fuses them)."""
    levels = torch.arange(256, dtype=torch.float32, device=device).repeat(3, 1)
    mean = torch.tensor(recipe.mean, device=device).view(3, 1)
    std = torch.tensor(recipe.std, device=device).view(3, 1)
    return levels.mul_(recipe.scale).sub_(mean).div_(std)


def resized(image: DeviceImage, size: tuple[int, int], mode: str) -> torch.Tensor:
    """``(h, w, 3)`` uint8 on ``image.device``: ``PIL.Image.resize`` of the RGB image to
    ``size`` ``(height, width)`` with ``mode``'s filter. On a CPU device Pillow does it
    (:mod:`.fastest_path`); elsewhere :mod:`.pil_resize` does, on the device, bit for bit."""
    if size == image.shape:
        return image.pixels
    if use_host_libraries(image.device):
        small = image.rgb.resize((size[1], size[0]), _FILTERS[mode])
        return torch.from_numpy(np.array(small))  # writable, as torch wants
    return pil_resize.resize(image.pixels, size, mode)


@dataclass(frozen=True)
class SamInputs:
    """SAM's encoder input and the two sizes its processor reports per image."""

    pixel_values: torch.Tensor
    original_sizes: list[tuple[int, int]]
    reshaped_sizes: list[tuple[int, int]]


def sam_inputs(images: Sequence[DeviceImage], processor: Any) -> SamInputs | None:
    """SamImageProcessor on the device: the longest side to ``size.longest_edge``, zero padding
    to ``pad_size`` at the bottom and right. ``None`` where the processor does otherwise."""
    recipe = recipe_of(processor)
    longest, pad = processor.size.longest_edge, getattr(processor, "pad_size", None)
    if recipe is None or not longest or not getattr(processor, "do_pad", False) or pad is None:
        return None
    batch = torch.zeros(len(images), 3, pad.height, pad.width, device=images[0].device)
    reshaped = []
    for index, image in enumerate(images):
        height, width = processor._get_preprocess_shape(image.shape, longest)
        resize_normalise(image, (height, width), recipe, out=batch[index, :, :height, :width])
        reshaped.append((height, width))
    return SamInputs(batch, [i.shape for i in images], reshaped)


def grounding_dino_inputs(
    images: Sequence[DeviceImage], processor: Any
) -> dict[str, torch.Tensor] | None:
    """GroundingDinoImageProcessor on the device: shortest side to ``shortest_edge`` (the longest
    at most ``longest_edge``), zero padding to the batch's largest image with a pixel mask."""
    recipe = recipe_of(processor)
    size = processor.size
    if recipe is None or not (size.shortest_edge and size.longest_edge):
        return None
    if not getattr(processor, "do_pad", False) or getattr(processor, "pad_size", None):
        return None
    shapes = [
        get_size_with_aspect_ratio(i.shape, size.shortest_edge, size.longest_edge) for i in images
    ]
    height, width = max(h for h, _ in shapes), max(w for _, w in shapes)
    device = images[0].device
    pixel_values = torch.zeros(len(images), 3, height, width, device=device)
    pixel_mask = torch.zeros(len(images), height, width, dtype=torch.int64, device=device)
    for index, (image, (h, w)) in enumerate(zip(images, shapes, strict=True)):
        resize_normalise(image, (h, w), recipe, out=pixel_values[index, :, :h, :w])
        pixel_mask[index, :h, :w] = 1
    return {"pixel_values": pixel_values, "pixel_mask": pixel_mask}


def clipseg_inputs(image: DeviceImage, processor: Any) -> torch.Tensor | None:
    """CLIPSeg's ViTImageProcessor on the device: squashed to ``size`` (height and width)."""
    recipe = recipe_of(processor)
    size = processor.size
    if recipe is None or not (size.height and size.width):
        return None
    return resize_normalise(image, (size.height, size.width), recipe)[None]
