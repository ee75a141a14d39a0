"""Which samples to pre-label, and their images (or, for a sequence, its frames' images).

A sample is selected when it has no label in the labelset, or, with ``overwrite_prelabels``,
when its label is still PRELABELED. Anything a person has touched (LABELED, REVIEWED, SKIPPED,
in progress, ...) is never selected.
"""

from __future__ import annotations

from collections.abc import Iterator

from PIL import Image

from prelabel.errors import ImageError, SampleError, StorageError, TransientStorageError
from prelabel.images import decode_image
from prelabel.segments.client import SampleRef, SegmentsApi
from prelabel.segments.statuses import may_write


def select_samples(
    api: SegmentsApi, dataset: str, labelset: str, *, overwrite_prelabels: bool
) -> Iterator[tuple[SampleRef, bool]]:
    """Every listed sample with whether it is selected (the caller counts both for progress)."""
    for sample in api.iter_samples(dataset, labelset):
        yield sample, may_write(sample.label_status, overwrite=overwrite_prelabels)


def load_image(api: SegmentsApi, sample: SampleRef, *, max_pixels: int) -> Image.Image:
    """Download and decode a sample's image; any failure names the sample and the cause.

    The URL is read where it points (``api.storage``: HTTP, S3, GCS); a refused read is
    retried once with the URL Segments signs for the image.
    """
    return _read_image(api, sample, sample.image_url, "", max_pixels=max_pixels)


def load_frame(api: SegmentsApi, sample: SampleRef, index: int, *, max_pixels: int) -> Image.Image:
    """Download and decode frame ``index`` of a sequence sample, as :func:`load_image` does.

    Errors name the sample and the frame, e.g. ``frame 3 (frame_00003): image download
    failed: ...``.

    Raises:
        SampleError: the frame does not exist, has no URL, or cannot be read or decoded.
    """
    if not 0 <= index < len(sample.frames):
        raise SampleError(
            f"frame {index}: the sample has {len(sample.frames)} frames",
            sample_uuid=sample.uuid,
            sample_name=sample.name,
        )
    frame = sample.frames[index]
    where = f"frame {index}" + (f" ({frame.name})" if frame.name else "") + ": "
    return _read_image(api, sample, frame.image_url, where, max_pixels=max_pixels)


def _read_image(
    api: SegmentsApi, sample: SampleRef, url: str | None, where: str, *, max_pixels: int
) -> Image.Image:
    """Read and decode ``url`` for ``sample``; ``where`` prefixes every error message."""

    def fail(message: str, *, transient: bool = False) -> SampleError:
        return SampleError(
            where + message, sample_uuid=sample.uuid, sample_name=sample.name, transient=transient
        )

    if not url:
        raise fail("sample has no image URL" if not where else "frame has no image URL")
    try:
        data = api.storage.read(url, signed_url=lambda: api.signed_url(sample.uuid, url))
    except StorageError as exc:
        transient = isinstance(exc, TransientStorageError)  # the image host's trouble
        raise fail(f"image download failed: {exc}", transient=transient) from None
    try:
        return decode_image(data, max_pixels=max_pixels)
    except ImageError as exc:
        raise fail(str(exc)) from None
