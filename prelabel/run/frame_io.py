"""A sequence's frame I/O around the model: the next frame downloads while this one is
predicted, and bitmaps upload behind it.

Per frame a sequence costs a download and two upload requests (presign + storage POST); done
in line they leave the model idle for as long as the requests take. With ``overlapped`` (the
``overlapped`` engine) one frame is read ahead and up to ``in_flight`` uploads run behind the
model on ``threads`` threads; memory stays at two decoded frames plus ``in_flight`` PNGs,
whatever the sequence's length. ``benchmarks/sequence_throughput.py`` measures both ways.

:func:`stream_frames` is the one loop of frames through the sequence pipeline, for every
front-end: ``run`` (upload each frame), ``predict --sequence`` (write each frame's files) and
``evaluate`` (score each frame).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, TypeVar

from PIL import Image

from prelabel.panoptic import FramePrediction, TrackInfo
from prelabel.taxonomy import Taxonomy

T = TypeVar("T")


class SequencePredictor(Protocol):
    """:class:`prelabel.pipeline.sequence.SequencePipeline`, typed structurally (no torch).

    ``tracks`` is the track table of the sequence being predicted, as of its last frame.
    """

    tracks: tuple[TrackInfo, ...]

    def predict_frames(
        self, frames: Iterable[Image.Image], taxonomy: Taxonomy
    ) -> Iterator[FramePrediction]: ...


@dataclass(frozen=True)
class StreamedFrame:
    """One frame out of the sequence pipeline, with the image it was predicted from."""

    index: int
    image: Image.Image
    predicted: FramePrediction


def stream_frames(
    pipeline: SequencePredictor,
    taxonomy: Taxonomy,
    load: Callable[[int], Image.Image],
    count: int,
    io: FrameIO,
) -> Iterator[StreamedFrame]:
    """Frames ``load(0)`` .. ``load(count - 1)`` through the pipeline, each prediction with its
    image, in order, read ahead by ``io``. Each image is held only until its prediction comes
    out (the pipeline may read a few frames ahead), so memory does not grow with the sequence.

    Raises:
        RuntimeError: the pipeline gave fewer predictions than frames.
    """
    shown: deque[Image.Image] = deque()

    def kept(images: Iterator[Image.Image]) -> Iterator[Image.Image]:
        for image in images:
            shown.append(image)
            yield image

    produced = 0
    for index, predicted in enumerate(
        pipeline.predict_frames(kept(io.frames(load, count)), taxonomy)
    ):
        produced = index + 1
        yield StreamedFrame(index, shown.popleft(), predicted)
    if produced < count:
        missing = list(range(produced, count))
        raise RuntimeError(f"the sequence pipeline gave no prediction for frames {missing}")


class FrameIO:
    """Read-ahead and upload-behind for one sequence; a context manager that waits for every
    upload it started (a frame uploaded is recorded even when a later frame fails)."""

    def __init__(self, *, overlapped: bool, in_flight: int, threads: int) -> None:
        self._overlapped = overlapped
        self._in_flight = in_flight
        self._reader = ThreadPoolExecutor(1, "prelabel-frame-read") if overlapped else None
        self._writer = ThreadPoolExecutor(threads, "prelabel-frame-upload") if overlapped else None
        self._uploads: deque[Future[None]] = deque()

    def frames(self, load: Callable[[int], T], count: int) -> Iterator[T]:
        """``load(0)``, ``load(1)``, ... lazily; overlapped, frame *i + 1* is being read while
        the caller works on frame *i*. An error of ``load`` comes out with its frame."""
        if self._reader is None:
            yield from (load(i) for i in range(count))
            return
        ahead = self._reader.submit(load, 0) if count else None
        for index in range(count):
            assert ahead is not None
            current = ahead
            ahead = self._reader.submit(load, index + 1) if index + 1 < count else None
            yield current.result()

    def upload(self, work: Callable[[], None]) -> None:
        """Run ``work`` (upload and record one frame) behind the model, or now when not
        overlapped; waits while ``in_flight`` uploads are pending, raising the first error."""
        if self._writer is None:
            work()
            return
        self._uploads.append(self._writer.submit(work))
        while len(self._uploads) > self._in_flight:
            self._uploads.popleft().result()

    def drain(self) -> None:
        """Wait for every upload; raise the first error."""
        while self._uploads:
            self._uploads.popleft().result()

    def __enter__(self) -> FrameIO:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for pool in (self._reader, self._writer):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=exc is not None and pool is self._reader)
