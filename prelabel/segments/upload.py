"""Write a pre-label to the server, never over a label a person has touched.

Order: upload the bitmap asset (the caller records it, so a rerun reuses it), re-read the
sample's label immediately before writing, write with status PRELABELED. A write whose answer
was lost is checked on the server before it is repeated, so each sample gets one label write.

A sequence sample is the same, with one bitmap per frame (:func:`upload_frame`, then
:func:`pending_sequence_label`) and still one label write for the whole sequence; our write is
recognised by all of its frames' bitmap URLs.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from prelabel.config import RemoteSettings
from prelabel.errors import TransientRemoteError
from prelabel.formats.label import EncodedLabel, label_attributes
from prelabel.formats.sequence_label import (
    FrameLabel,
    Timestamp,
    check_sequence_label,
    empty_frame_png,
    frame_label,
    label_bitmap_urls,
    sequence_label_attributes,
)
from prelabel.formats.vector_label import vector_label_key
from prelabel.segments.client import LabelState, SampleRef, SegmentsApi
from prelabel.segments.statuses import may_write
from prelabel.segments.transport import retrying

logger = logging.getLogger(__name__)


#: The ``asset_url`` of a box or polygon label, which has no asset: its attributes are the
#: whole label (shared/segments-api.md 12), so "uploading" it only makes it final.
NO_ASSET = "none:vector-label"


@dataclass(frozen=True)
class PendingLabel:
    """A label ready to write: its asset is uploaded and its attributes are final.

    For a sequence, ``asset_url`` is the first frame's bitmap and ``attributes`` hold every
    frame (:func:`pending_sequence_label`); for a box or polygon label it is :data:`NO_ASSET`.
    """

    asset_url: str
    attributes: dict[str, Any]
    score: float


class WriteNotConfirmed(TransientRemoteError):
    """The label PUT failed in a way a retry may fix; it may or may not have been applied."""


@dataclass(frozen=True)
class WriteResult:
    written: bool
    #: Why nothing was written (a person's label, or ours already there).
    reason: str | None = None


def upload_asset(api: SegmentsApi, encoded: EncodedLabel, filename: str) -> PendingLabel:
    """Upload the bitmap; the caller records the returned label before writing it.

    Recording is the caller's job (the run's recorder): on the Ray engine the upload runs on a
    machine without the driver's state file and the fact travels back to the driver instead.
    A retried upload may leave an unused asset behind.
    """
    url = api.upload_png(encoded.png, filename)
    return PendingLabel(
        asset_url=url,
        attributes=label_attributes(encoded.annotations, url),
        score=encoded.score,
    )


def upload_frame(
    api: SegmentsApi,
    encoded: EncodedLabel,
    *,
    size: tuple[int, int],
    filename: str,
    timestamp: Timestamp = None,
    empty_urls: MutableMapping[tuple[int, int], str] | None = None,
) -> FrameLabel:
    """Upload one sequence frame's bitmap and return the frame's label.

    A frame without objects reuses the all-zero bitmap of its ``size`` (width, height) from
    ``empty_urls``, uploading it on first use (pass the same dict for every frame of a run).
    ``timestamp`` is the sample frame's, copied into the label frame.
    """
    if not encoded.annotations and empty_urls is not None:
        url = empty_urls.get(size)
        if url is None:
            url = api.upload_png(empty_frame_png(size), f"empty-{size[0]}x{size[1]}.png")
            empty_urls[size] = url
    else:
        url = api.upload_png(encoded.png, filename)
    return frame_label(encoded, url, timestamp)


def pending_sequence_label(
    sample: SampleRef, frames: Sequence[FrameLabel], score: float
) -> PendingLabel:
    """The label of a sequence sample, checked against the sample's frames before any write.

    Raises:
        ValueError: the frames do not fit the sample (count) or break a sequence rule (see
            :func:`prelabel.formats.sequence_label.check_sequence_label`).
    """
    attributes = sequence_label_attributes(frames)
    check_sequence_label(attributes, len(sample.frames))
    first = frames[0].asset_url if frames else ""
    return PendingLabel(asset_url=first, attributes=attributes, score=score)


def blocking_reason(current: LabelState, pending: PendingLabel, *, overwrite: bool) -> str | None:
    """Why the label must not be written now, or None when writing is safe.

    Only "no label" and (with ``overwrite``) a PRELABELED label may be written over. **A label
    with any other status is never written over**: a person labeled, reviewed or skipped it.
    """
    if not may_write(current.status, overwrite=True):
        return f"label is {current.status} (a person has worked on it)"
    if current.status is not None and _is_our_write(current, pending):
        return "already written by prelabel"
    if not may_write(current.status, overwrite=overwrite):
        return "already pre-labeled"
    return None


def _is_our_write(current: LabelState, pending: PendingLabel) -> bool:
    """Whether the label on the server is ``pending``, written by an earlier attempt: by its
    new bitmap URLs, or for a label without a bitmap by its content (ids, types, points)."""
    if pending.asset_url == NO_ASSET:
        key = vector_label_key(pending.attributes)
        return key is not None and current.vector_key == key
    return bool(current.bitmap_urls) and current.bitmap_urls == label_bitmap_urls(
        pending.attributes
    )


def write_label(
    api: SegmentsApi,
    settings: RemoteSettings,
    *,
    sample_uuid: str,
    labelset: str,
    pending: PendingLabel,
    overwrite: bool,
) -> WriteResult:
    """Re-read the label, then write ours unless :func:`blocking_reason` forbids it.

    Retries are done here rather than inside the API call: after a failed attempt the label is
    read again first, so a write that reached the server before its answer was lost is found
    (ours, by its bitmap URLs: one, or one per frame) instead of being written a second time.
    Only a failed PUT restarts the loop; the re-read has its own retries, which must not be
    multiplied by these.
    """

    def attempt() -> WriteResult:
        reason = blocking_reason(
            api.label_state(sample_uuid, labelset), pending, overwrite=overwrite
        )
        if reason == "already written by prelabel":
            return WriteResult(written=True)
        if reason is not None:
            return WriteResult(written=False, reason=reason)
        try:
            api.put_label_once(sample_uuid, labelset, pending.attributes, pending.score)
        except TransientRemoteError as exc:
            raise WriteNotConfirmed(str(exc), retry_after=exc.retry_after) from None
        return WriteResult(written=True)

    return retrying(settings, f"label write for {sample_uuid}", retry_on=WriteNotConfirmed)(attempt)
