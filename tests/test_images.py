"""Image decoding: modes, EXIF orientation, the bomb guard, downscaling."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from prelabel.errors import ImageError
from prelabel.images import decode_image, find_images, fit_within, to_rgb


def _png(image: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 20))  # blue strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    decoded = decode_image(_png(image, "JPEG", exif=exif, quality=95), max_pixels=10**6)
    assert decoded.size == (20, 40)
    top = np.asarray(decoded)[2, 10]
    assert top[2] > 200 and top[0] < 60  # the blue strip is now on top


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.new("L", (4, 4), 128), (128, 128, 128)),
        (Image.new("CMYK", (4, 4), (0, 0, 0, 0)), (255, 255, 255)),
        (Image.fromarray(np.full((4, 4), 65535, np.uint16)), (255, 255, 255)),
        (Image.fromarray(np.full((4, 4), 32896, np.uint16)), (128, 128, 128)),
        (Image.new("RGBA", (4, 4), (10, 20, 30, 0)), (255, 255, 255)),
        (Image.new("RGBA", (4, 4), (10, 20, 30, 255)), (10, 20, 30)),
        (Image.new("LA", (4, 4), (50, 255)), (50, 50, 50)),
    ],
    ids=["L", "CMYK", "I16-max", "I16-mid", "RGBA-transparent", "RGBA-opaque", "LA"],
)
def test_modes_become_rgb(image: Image.Image, expected: tuple[int, int, int]) -> None:
    rgb = to_rgb(image)
    assert rgb.mode == "RGB"
    assert tuple(np.asarray(rgb)[1, 1]) == expected


def test_palette_with_transparency_composited() -> None:
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    image.info["transparency"] = 1
    decoded = decode_image(_png(image), max_pixels=100)
    assert tuple(np.asarray(decoded)[0, 0]) == (255, 255, 255)


def test_16_bit_png_file_keeps_its_range() -> None:
    data = _png(Image.fromarray(np.full((4, 4), 65535, np.uint16)))
    assert tuple(np.asarray(decode_image(data, max_pixels=100))[0, 0]) == (255, 255, 255)


def test_bomb_refused_before_decoding() -> None:
    data = _png(Image.new("L", (1000, 1000)))
    with pytest.raises(ImageError, match="decompression bomb"):
        decode_image(data, max_pixels=999_999)
    assert decode_image(data, max_pixels=1_000_000).size == (1000, 1000)


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"not an image", "not a recognised image format"), (b"", "not a recognised")],
)
def test_garbage_is_an_image_error(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        decode_image(data, max_pixels=100)


def test_truncated_file_is_an_image_error() -> None:
    data = _png(Image.effect_noise((64, 64), 50).convert("RGB"))
    with pytest.raises(ImageError, match="cannot decode"):
        decode_image(data[: len(data) // 2], max_pixels=10**6)


def test_fit_within_downscales_longest_side_only_when_needed() -> None:
    small = fit_within(Image.new("RGB", (100, 50)), 200)
    assert small.image.size == (100, 50) and not small.is_downscaled
    big = fit_within(Image.new("RGB", (4000, 1000)), 1000)
    assert big.image.size == (1000, 250)
    assert big.original_size == (4000, 1000) and big.is_downscaled


def test_find_images_expands_folders(tmp_path: object) -> None:
    from pathlib import Path

    root = Path(str(tmp_path))
    (root / "sub").mkdir()
    for name in ["b.png", "a.JPG", "sub/c.webp", "notes.txt"]:
        (root / name).write_bytes(b"x")
    found = find_images([root])
    assert [p.relative_to(root).as_posix() for p in found] == ["a.JPG", "b.png", "sub/c.webp"]
