"""Values that cross the border between the pipeline and everything after it.

They hold numpy arrays only (no torch), so encoding, export and upload never import a model
library. A :class:`PanopticPrediction` is the single result of predicting one image.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

#: Segments.ai bitmaps store an object id in the R, G and B bytes of a PNG pixel.
MAX_SEGMENT_ID = 2**24 - 1


@dataclass(frozen=True)
class MaskCandidate:
    """One mask proposed by the pipeline before the panoptic merge.

    ``mask`` is a boolean array in the coordinates the merge works in (the working image, the
    *frame*). ``score`` orders overlaps between things: the higher score takes the contested
    pixels.

    A mask may be the whole frame (``frame`` None, the default) or a crop of it: ``mask`` then
    covers rows ``origin[0]`` to ``origin[0] + mask.shape[0]`` and the columns likewise of a
    frame of shape ``frame``, and every pixel outside the crop is False. Why: a thing is
    usually small, and copying its full-size mask from the model's device and scanning the
    whole image once per thing was most of the host's work for things and for the merge
    (20 boxes x 1920 x 1080 = 40 MB per image); a back-end that knows a mask's tight window
    hands over only that. Whoever needs the full-size array asks :meth:`full_mask`.
    """

    mask: npt.NDArray[np.bool_]
    category_id: int
    score: float
    is_thing: bool
    #: The detector's box ``(x0, y0, x1, y1)`` in the frame's coordinates, where the back-end
    #: has one; box datasets may write it instead of the mask's tight box.
    box: tuple[float, float, float, float] | None = None
    #: ``(row, column)`` of the crop's top-left pixel in the frame; ``(0, 0)`` without a frame.
    origin: tuple[int, int] = (0, 0)
    #: ``(height, width)`` of the frame the crop lies in; None when ``mask`` is the frame.
    frame: tuple[int, int] | None = None

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(height, width)`` of the working image this candidate lies in."""
        if self.frame is not None:
            return self.frame
        height, width = self.mask.shape
        return height, width

    @property
    def window(self) -> tuple[slice, slice]:
        """Where ``mask`` lies in the frame: ``full_mask()[window]`` is ``mask``."""
        top, left = self.origin
        height, width = self.mask.shape
        return slice(top, top + height), slice(left, left + width)

    def full_mask(self) -> npt.NDArray[np.bool_]:
        """The mask at the frame's size: ``mask`` itself when it is the frame (no copy, so do
        not write to it), else a new array, False outside the crop. Costs a full-size array;
        for those who truly need one (a tracker's prompt, an IoU against full-size masks)."""
        if self.frame is None:
            return self.mask
        full = np.zeros(self.frame, dtype=np.bool_)
        full[self.window] = self.mask
        return full

    def cropped(self) -> MaskCandidate:
        """The same candidate with ``mask`` cut to the tight window of its True pixels (an
        empty ``(0, 0)`` crop when it has none), in the same frame."""
        rows = np.flatnonzero(self.mask.any(axis=1))
        if rows.size == 0:
            return replace(
                self, mask=np.zeros((0, 0), np.bool_), origin=(0, 0), frame=self.frame_shape
            )
        cols = np.flatnonzero(self.mask[rows[0] : rows[-1] + 1].any(axis=0))
        top, left = self.origin
        return replace(
            self,
            mask=self.mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1],
            origin=(top + int(rows[0]), left + int(cols[0])),
            frame=self.frame_shape,
        )


@dataclass(frozen=True)
class Segment:
    """One segment of a panoptic map; ``id`` is its pixel value in the id map.

    ``bbox`` is COCO style ``(x, y, width, height)`` in pixels of the original image, the
    tight box of the segment's pixels; ``box`` is the detector's ``(x0, y0, x1, y1)`` in the
    same pixels where the back-end gave one (``None`` otherwise: stuff, tracked frames).
    """

    id: int
    category_id: int
    is_thing: bool
    score: float
    area: int
    bbox: tuple[int, int, int, int]
    box: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class PanopticPrediction:
    """A panoptic map of one image.

    Contract: ``id_map`` is ``uint32`` with the original image's ``(height, width)``; 0 means
    unassigned; every non-zero value appears exactly once as a :class:`Segment` id and every
    segment id appears in the map; ids are at most :data:`MAX_SEGMENT_ID`.
    """

    id_map: npt.NDArray[np.uint32]
    segments: tuple[Segment, ...]

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``, the PIL convention."""
        height, width = self.id_map.shape
        return width, height

    def segment(self, segment_id: int) -> Segment:
        for seg in self.segments:
            if seg.id == segment_id:
                return seg
        raise KeyError(segment_id)


@dataclass(frozen=True)
class FramePrediction:
    """The panoptic map of one frame of an image sequence.

    ``prediction``'s segment ids are track ids: the same object (thing) or category (stuff) has
    the same id on every frame of the sequence, and an id is never given to anything else.
    ``index`` counts frames from 0; ``is_keyframe`` says whether things were detected on this
    frame (elsewhere they are only tracked).
    """

    index: int
    prediction: PanopticPrediction
    is_keyframe: bool


@dataclass(frozen=True)
class TrackInfo:
    """One track of a sequence, for a ``tracks.json``: its id (the segment id on every frame
    it appears in), its one category, and the frames (indices, ascending) it has pixels in."""

    track_id: int
    category_id: int
    is_thing: bool
    frames: tuple[int, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "track_id": self.track_id,
            "category_id": self.category_id,
            "is_thing": self.is_thing,
            "frames": list(self.frames),
        }
