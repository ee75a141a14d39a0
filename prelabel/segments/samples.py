"""Which samples to pre-label, and their images.

A sample is selected when it has no label in the labelset, or, with ``overwrite_prelabels``,
when its label is still PRELABELED. Anything a person has touched (LABELED, REVIEWED, SKIPPED,
in progress, ...) is never selected.
"""

from __future__ import annotations

from collections.abc import Iterator

from PIL import Image

from prelabel.errors import ImageError, SampleError, StorageError
from prelabel.images import decode_image
from prelabel.segments.client import SampleRef, SegmentsApi
from prelabel.segments.statuses import is_selectable


def select_samples(
    api: SegmentsApi, dataset: str, labelset: str, *, overwrite_prelabels: bool
) -> Iterator[tuple[SampleRef, bool]]:
    """Every listed sample with whether it is selected (the caller counts both for progress)."""
    for sample in api.iter_samples(dataset, labelset):
        yield sample, is_selectable(sample.label_status, overwrite_prelabels=overwrite_prelabels)


def load_image(api: SegmentsApi, sample: SampleRef, *, max_pixels: int) -> Image.Image:
    """Download and decode a sample's image; any failure names the sample and the cause.

    The URL is read where it points (``api.storage``: HTTP, S3, GCS); a refused read is
    retried once with the URL Segments signs for the image.
    """
    url = sample.image_url
    if not url:
        raise SampleError(
            "sample has no image URL", sample_uuid=sample.uuid, sample_name=sample.name
        )
    try:
        data = api.storage.read(url, signed_url=lambda: api.signed_url(sample.uuid, url))
    except StorageError as exc:
        raise SampleError(
            f"image download failed: {exc}", sample_uuid=sample.uuid, sample_name=sample.name
        ) from None
    try:
        return decode_image(data, max_pixels=max_pixels)
    except ImageError as exc:
        raise SampleError(str(exc), sample_uuid=sample.uuid, sample_name=sample.name) from None
