"""The three models' preprocessing on the device against the transformers processors' own output.

The processors (PIL resize, numpy normalisation) are the reference: the real checkpoints were
trained on what they make, and the seed's loop uses them. Pillow's resize is reproduced bit for
bit (``pil_resize``), so the only difference left is float rounding in the normalisation. A CPU
device resizes with Pillow itself and any other device with ``pil_resize``
(``fastest_path``); both are run here on the CPU, the second under ``tensor_paths()``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from transformers import (
    GroundingDinoImageProcessorPil,
    SamImageProcessorPil,
    ViTImageProcessorPil,
)

from prelabel.backends.grounded_sam import pil_resize
from prelabel.backends.grounded_sam.fastest_path import tensor_paths, use_host_libraries
from prelabel.backends.grounded_sam.preprocess import (
    DeviceImage,
    clipseg_inputs,
    grounding_dino_inputs,
    recipe_of,
    resize_normalise,
    resized,
    sam_inputs,
)
from tests.fixtures.images import noise_image

#: Float rounding of the normalisation only (one uint8 level would be 1 / 255 / 0.229 = 0.017).
TOLERANCE = 1e-5
CPU = torch.device("cpu")

#: Each test below runs once per way a CPU device can resize: Pillow (its own way) and the
#: tensor passes an accelerator takes (forced).
PATHS = pytest.mark.parametrize("tensors", [False, True], ids=["pillow", "tensor-ops"])


@pytest.fixture
def path(tensors: bool) -> Iterator[None]:
    if tensors:
        with tensor_paths():
            assert not use_host_libraries(CPU)
            yield
    else:
        assert use_host_libraries(CPU)
        yield


def photo_like(width: int, height: int) -> Image.Image:
    """Smooth gradients, hard edges and texture, blurred like a camera's image."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.stack([xx / width * 255, yy / height * 255, (xx + yy) % 97 * 2.6], axis=-1)
    pixels[height // 3 : height // 2, width // 4 : width // 2] = (200, 30, 60)
    pixels += rng.normal(0, 6, pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image.filter(ImageFilter.GaussianBlur(2))


IMAGES = [
    pytest.param(lambda: noise_image(1920, 1080, 7), id="noise-1920x1080"),
    pytest.param(lambda: photo_like(1280, 720), id="photo-1280x720"),
    pytest.param(lambda: photo_like(500, 300), id="photo-500x300-upscaled"),
]


def _max_diff(reference: torch.Tensor, ours: torch.Tensor) -> float:
    assert reference.shape == ours.shape
    return float((reference.float() - ours.float()).abs().max())


@PATHS
@pytest.mark.parametrize("make", IMAGES)
@pytest.mark.usefixtures("path")
def test_each_model_input_matches_its_processor(make: object) -> None:
    image = make()  # type: ignore[operator]
    on_device = [DeviceImage(image, CPU)]

    sam = SamImageProcessorPil()
    expected = sam(images=image, return_tensors="pt")
    made = sam_inputs(on_device, sam)
    assert made is not None
    assert _max_diff(expected["pixel_values"], made.pixel_values) <= TOLERANCE
    assert made.original_sizes == [tuple(expected["original_sizes"][0].tolist())]
    assert made.reshaped_sizes == [tuple(expected["reshaped_input_sizes"][0].tolist())]

    dino = GroundingDinoImageProcessorPil()
    expected = dino(images=image, return_tensors="pt")
    found = grounding_dino_inputs(on_device, dino)
    assert found is not None
    assert _max_diff(expected["pixel_values"], found["pixel_values"]) <= TOLERANCE
    assert torch.equal(expected["pixel_mask"], found["pixel_mask"])

    for resample in (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC):
        clipseg = ViTImageProcessorPil(size={"height": 352, "width": 352}, resample=resample)
        expected = clipseg(images=image, return_tensors="pt")
        pixels = clipseg_inputs(on_device[0], clipseg)
        assert pixels is not None
        assert _max_diff(expected["pixel_values"], pixels) <= TOLERANCE


@PATHS
@pytest.mark.usefixtures("path")
def test_a_transparent_image_is_composited_over_white_as_the_processors_do() -> None:
    rgba = photo_like(120, 80).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.arange(120, dtype=np.uint8) * 2, (80, 1))))
    sam = SamImageProcessorPil()  # converts to RGB (CLIPSeg's ViT processor does not)
    expected = sam(images=rgba, return_tensors="pt")["pixel_values"]
    made = sam_inputs([DeviceImage(rgba, CPU)], sam)
    assert made is not None
    assert _max_diff(expected, made.pixel_values) <= TOLERANCE


@PATHS
@pytest.mark.usefixtures("path")
def test_a_batch_of_two_sizes_is_padded_as_the_processors_pad_it() -> None:
    images = [photo_like(640, 480), noise_image(300, 500, 1)]
    on_device = [DeviceImage(i, CPU) for i in images]
    dino = GroundingDinoImageProcessorPil(size={"shortest_edge": 256, "longest_edge": 512})
    expected = dino(images=images, return_tensors="pt")
    found = grounding_dino_inputs(on_device, dino)
    assert found is not None
    assert _max_diff(expected["pixel_values"], found["pixel_values"]) <= TOLERANCE
    assert torch.equal(expected["pixel_mask"], found["pixel_mask"])
    sam = SamImageProcessorPil()
    made = sam_inputs(on_device, sam)
    assert made is not None
    assert _max_diff(
        sam(images=images, return_tensors="pt")["pixel_values"], made.pixel_values
    ) <= (TOLERANCE)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize(("source", "target"), [((97, 61), (31, 45)), ((40, 30), (353, 127))])
def test_the_resize_is_pillows_bit_for_bit(
    mode: str, source: tuple[int, int], target: tuple[int, int]
) -> None:
    """``source`` and ``target`` are ``(width, height)``; down, up and mixed per axis."""
    image = noise_image(*source, seed=4)
    filters = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
    expected = np.asarray(image.resize(target, filters[mode]))
    pixels = torch.from_numpy(np.array(image))
    ours = pil_resize.resize(pixels, (target[1], target[0]), mode)
    assert ours.dtype == torch.uint8
    assert np.array_equal(ours.numpy(), expected)


@PATHS
@pytest.mark.usefixtures("path")
def test_the_level_table_normalises_as_the_arithmetic_does_bit_for_bit() -> None:
    """The lookup gives exactly ``(level * scale - mean) / std`` per step in float32, also
    written into a view of a padded batch."""
    image = DeviceImage(photo_like(333, 201), CPU)
    for processor in (SamImageProcessorPil(), ViTImageProcessorPil()):
        recipe = recipe_of(processor)
        assert recipe is not None
        pixels = resized(image, (150, 260), recipe.mode).permute(2, 0, 1).float()
        mean = torch.tensor(recipe.mean).view(3, 1, 1)
        std = torch.tensor(recipe.std).view(3, 1, 1)
        expected = (pixels * recipe.scale - mean) / std
        assert torch.equal(resize_normalise(image, (150, 260), recipe), expected)
        batch = torch.zeros(2, 3, 170, 300)
        resize_normalise(image, (150, 260), recipe, out=batch[1, :, :150, :260])
        assert torch.equal(batch[1, :, :150, :260], expected)
        assert not batch[0].any() and not batch[1, :, 150:].any() and not batch[1, :, :, 260:].any()


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_pillow_and_the_tensor_passes_give_the_same_pixels(mode: str) -> None:
    """The policy only picks the faster of two identical answers."""
    image = DeviceImage(photo_like(333, 201), CPU)
    for size in ((100, 166), (500, 120), (201, 333)):
        by_pillow = resized(image, size, mode)
        with tensor_paths():
            by_tensors = resized(image, size, mode)
        assert by_pillow.dtype == by_tensors.dtype == torch.uint8
        assert by_pillow.shape == (*size, 3)
        assert torch.equal(by_pillow, by_tensors), size


def test_only_a_cpu_device_uses_the_host_libraries() -> None:
    assert use_host_libraries(CPU)
    assert not use_host_libraries(torch.device("meta"))
    with tensor_paths():
        assert not use_host_libraries(CPU)
    assert use_host_libraries(CPU)


def test_a_processor_doing_something_else_falls_back_to_itself() -> None:
    """A filter or a step the tensor path lacks: ``None``, and the caller runs the processor."""
    image = DeviceImage(photo_like(64, 48), CPU)
    nearest = ViTImageProcessorPil(resample=Image.Resampling.NEAREST)
    cropping = ViTImageProcessorPil(do_center_crop=True, crop_size={"height": 32, "width": 32})
    assert recipe_of(nearest) is None and clipseg_inputs(image, nearest) is None
    assert recipe_of(cropping) is None and clipseg_inputs(image, cropping) is None
    assert recipe_of(ViTImageProcessorPil()) is not None
