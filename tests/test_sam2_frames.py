"""SAM 2 preprocessing written in the project (prelabel.backends.sam2_video.frames) against the
formulas, computed independently with numpy on small hand-made cases."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from prelabel.backends.sam2_video.frames import frame_pixel_values, prompt_mask, upscale_masks

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def bilinear(values: npt.NDArray[np.float64], out_h: int, out_w: int) -> npt.NDArray[np.float64]:
    """Bilinear resize with pixel centres aligned (align_corners=False), edges clamped."""
    in_h, in_w = values.shape

    def axis(n_in: int, n_out: int) -> tuple[npt.NDArray[np.intp], ...]:
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(np.intp)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, pos - lo

    r0, r1, fr = axis(in_h, out_h)
    c0, c1, fc = axis(in_w, out_w)
    top = values[r0][:, c0] * (1 - fc) + values[r0][:, c1] * fc
    bottom = values[r1][:, c0] * (1 - fc) + values[r1][:, c1] * fc
    return top * (1 - fr)[:, None] + bottom * fr[:, None]


def test_a_constant_frame_is_normalised_with_imagenet_statistics() -> None:
    image = Image.new("RGB", (37, 11), (255, 128, 0))
    pixels = frame_pixel_values(image, 16)
    assert pixels.shape == (3, 16, 16) and pixels.dtype == torch.float32
    expected = (np.array([255, 128, 0]) / 255 - MEAN) / STD
    np.testing.assert_allclose(pixels.mean(dim=(1, 2)).numpy(), expected, rtol=1e-6)
    assert float(pixels.std(dim=(1, 2)).max()) < 1e-5


def test_resize_is_bilinear_to_a_square_ignoring_the_aspect_ratio() -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (3, 5, 3), dtype=np.uint8)  # 5 wide, 3 high
    pixels = frame_pixel_values(Image.fromarray(array), 8).numpy()
    for channel in range(3):
        resized = bilinear(array[..., channel].astype(np.float64), 8, 8)
        # PIL keeps 8 bits per channel after resizing: one level of rounding.
        expected = (np.round(resized) / 255 - MEAN[channel]) / STD[channel]
        np.testing.assert_allclose(pixels[channel], expected, atol=1.01 / 255 / STD[channel])


def test_mask_logits_are_upscaled_bilinearly_then_thresholded_at_zero() -> None:
    logits = np.array(
        [[[-1.0, 2.0], [3.0, -4.0]], [[5.0, -4.0], [-3.0, 6.5]]]
    )  # no exact 0 anywhere
    masks = upscale_masks(torch.from_numpy(logits).float(), (7, 5))
    assert masks.shape == (2, 7, 5) and masks.dtype == np.bool_
    for got, low in zip(masks, logits, strict=True):
        np.testing.assert_array_equal(got, bilinear(low, 7, 5) > 0)
    assert upscale_masks(torch.zeros(0, 1, 4, 4), (3, 2)).shape == (0, 3, 2)


def test_a_mask_prompt_becomes_a_binary_square() -> None:
    mask = np.zeros((10, 20), dtype=bool)
    mask[:, :10] = True  # the left half
    prompt = prompt_mask(mask, 8)
    assert prompt.shape == (1, 1, 8, 8)
    expected = np.zeros((8, 8), dtype=np.float32)
    expected[:, :4] = 1
    np.testing.assert_array_equal(prompt[0, 0].numpy(), expected)
