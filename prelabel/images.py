"""Decode images safely into the RGB the models expect.

Real datasets hold phone photos with EXIF rotation, CMYK scans, 16-bit grayscale, palette PNGs with
transparency and the occasional decompression bomb. Every image goes through :func:`decode_image`
so the pipeline only ever sees an upright RGB image of bounded size, and a bad file becomes an
:class:`~prelabel.errors.ImageError` that names the cause.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from prelabel.errors import ImageError

#: Extensions picked up when a folder is given to ``prelabel predict``.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})

#: Transparent pixels are composited on this colour; their RGB is undefined otherwise.
_BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class WorkingImage:
    """An image as the models see it, and the size its masks must be returned at."""

    image: Image.Image
    original_size: tuple[int, int]

    @property
    def is_downscaled(self) -> bool:
        return self.image.size != self.original_size


def decode_image(data: bytes | Path, *, max_pixels: int) -> Image.Image:
    """Open, check the pixel count, apply EXIF orientation and convert to RGB.

    The pixel count is checked from the header, before any pixel is decoded, so a bomb costs
    nothing. Raises :class:`ImageError` naming the reason for unreadable, truncated or oversized
    files.
    """
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with warnings.catch_warnings():
            # Our own limit replaces PIL's global one, which only warns below 2x its limit.
            # PIL's own (process-global) guard still refuses above twice its limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)
            _check_pixels(*image.size, max_pixels=max_pixels)
            image.load()
            return to_rgb(ImageOps.exif_transpose(image))
    except Image.DecompressionBombError as exc:
        raise ImageError(f"refused as a possible decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise ImageError("not a recognised image format") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot decode image: {exc}") from None


def _check_pixels(width: int, height: int, *, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageError(
            f"image has {width}x{height} = {width * height:,} pixels, more than the limit of "
            f"{max_pixels:,} (pipeline.max_image_pixels); refused as a possible decompression bomb"
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB without clipping high-bit-depth data.

    ``Image.convert("RGB")`` clips 16-bit values to 255 and ignores alpha, so those modes are
    handled here: 16/32-bit integers are scaled down, floats are min-max normalised, transparency
    is composited on white.
    """
    if image.mode == "RGB":
        return image
    if image.mode in {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}:
        return _high_depth_to_rgb(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
    else:
        # 16-bit data (also when PIL hands it over as 32-bit "I"): 65535 -> 255.
        scaled = np.clip(values, 0, 65535) / 257.0
    gray = Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")
    return gray.convert("RGB")


def fit_within(image: Image.Image, max_side: int) -> WorkingImage:
    """Downscale so the longest side is at most ``max_side``; masks go back to the original size.

    Large photos gain nothing from being segmented at 6000 px: SAM sees 1024 px anyway, and the
    merge and PNG encoding cost grows with the pixel count.
    """
    width, height = image.size
    longest = max(width, height)
    if longest <= max_side:
        return WorkingImage(image=image, original_size=(width, height))
    scale = max_side / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return WorkingImage(
        image=image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0),
        original_size=(width, height),
    )


def find_images(paths: list[Path]) -> list[Path]:
    """Expand folders (recursively, sorted) into image files; files are kept as given."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            found.append(path)
    return found
