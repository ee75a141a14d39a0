"""Values that cross the border between the pipeline and everything after it.

They hold numpy arrays only (no torch), so encoding, export and upload never import a model
library. A :class:`PanopticPrediction` is the single result of predicting one image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: Segments.ai bitmaps store an object id in the R, G and B bytes of a PNG pixel.
MAX_SEGMENT_ID = 2**24 - 1


@dataclass(frozen=True)
class MaskCandidate:
    """One mask proposed by the pipeline before the panoptic merge.

    ``mask`` is a boolean array in the coordinates the merge works in. ``score`` orders overlaps
    between things: the higher score takes the contested pixels.
    """

    mask: npt.NDArray[np.bool_]
    category_id: int
    score: float
    is_thing: bool
    #: The detector's box ``(x0, y0, x1, y1)`` in the mask's coordinates, where the back-end
    #: has one; box datasets may write it instead of the mask's tight box.
    box: tuple[float, float, float, float] | None = None


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
