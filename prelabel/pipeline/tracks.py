"""Track ids across the frames of a sequence: the model-free part, tested on a fake tracker.

Why apart from the SAM 2 code: which detection continues which track, when a track ends and
which id a segment gets are decisions with edge cases (moves, new objects, vanished objects,
other categories, frames of other sizes) that must be testable from small literal masks, without
torch. :class:`TrackLedger` makes them over any :class:`Tracker`; the SAM 2 one is
:class:`~prelabel.backends.sam2_video.tracker.Sam2Tracker`.

The rules:

- Things are detected on keyframes only (the caller says which frames are keyframes). Every
  other frame gets its things from the tracker alone.
- On a keyframe, detections are matched one to one to the live tracks of the **same
  category**, greedily by mask IoU, highest first; a pair with IoU >= ``match_iou`` continues
  the track (the track keeps the tracker's mask, and takes the detection's score). Every
  detection left over starts a new track: a new id, never used before in the sequence.
  A track is never matched to a detection of another category, so a track has one category.
- A track ends on the first frame the tracker says its object is not present
  (``TrackedObject.present``); the tracker forgets it, and a later detection of the same
  object starts a new track with a new id.
- Each stuff category gets one id the first time it is a candidate, kept for the whole
  sequence. Thing and stuff ids come from one counter, 1, 2, 3, ...
- Each frame is merged by :func:`~prelabel.pipeline.merge.merge_panoptic` with those ids, at
  that frame's own size; the track table records the frames each id has pixels in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image

from prelabel.panoptic import MAX_SEGMENT_ID, FramePrediction, MaskCandidate, TrackInfo
from prelabel.pipeline.merge import merge_panoptic

__all__ = ["TrackLedger", "TrackedObject", "Tracker", "mask_iou"]


@dataclass(frozen=True)
class TrackedObject:
    """One object on the tracker's current frame.

    ``mask`` is ``(H, W)`` bool at the size of the image given to the tracker; ``present`` is
    the tracker's verdict that the object is visible (SAM 2: object score logit > 0); ``score``
    the tracker's confidence in ``[0, 1]``.
    """

    mask: npt.NDArray[np.bool_]
    present: bool
    score: float


class Tracker(Protocol):
    """A streaming video object tracker: frames come one at a time, objects by id."""

    def advance(self, image: Image.Image) -> dict[int, TrackedObject]:
        """Add the next frame and propagate every live object to it."""
        ...

    def add_objects(self, masks: dict[int, npt.NDArray[np.bool_]]) -> dict[int, TrackedObject]:
        """Start objects with these ids from mask prompts on the current frame."""
        ...

    def remove_objects(self, ids: Iterable[int]) -> None:
        """Forget these objects; they are not propagated any more."""
        ...


def mask_iou(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """``(N, M)`` IoU of ``(N, H, W)`` and ``(M, H, W)`` boolean masks; 0 where both are empty."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    fa = a.reshape(len(a), -1).astype(np.float64)
    fb = b.reshape(len(b), -1).astype(np.float64)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclass
class _Track:
    category_id: int
    is_thing: bool
    score: float
    frames: list[int]


class TrackLedger:
    """Owns a sequence's ids: which tracks live, their categories, and the frames they are in.

    Per frame, in order: :meth:`things` (tracker step, track ends, keyframe matching), then
    :meth:`frame` (stuff ids, merge, bookkeeping).
    """

    def __init__(self, tracker: Tracker, *, match_iou: float, min_area: int) -> None:
        if not 0 < match_iou <= 1:
            raise ValueError(f"match_iou must be in (0, 1], got {match_iou}")
        self.tracker = tracker
        self.match_iou = match_iou
        self.min_area = min_area
        self._tracks: dict[int, _Track] = {}
        self._live: set[int] = set()
        self._stuff_ids: dict[int, int] = {}
        self._next_id = 1
        self._frame = -1

    def things(
        self, image: Image.Image, detections: Sequence[MaskCandidate] | None
    ) -> list[tuple[int, MaskCandidate]]:
        """Advance the tracker to ``image`` (the next frame) and return its things with ids.

        ``detections`` are the frame's thing detections on a keyframe, at ``image``'s size;
        ``None`` on other frames. The result holds every live track present on this frame,
        continued and new, as ``(track id, candidate)``.
        """
        self._frame += 1
        tracked = self.tracker.advance(image)
        gone = [i for i in self._live if i not in tracked or not tracked[i].present]
        if gone:
            self.tracker.remove_objects(gone)
            self._live.difference_update(gone)
        present = {i: tracked[i] for i in sorted(self._live)}
        if detections:
            new = self._match(present, detections)
            if new:
                added = self.tracker.add_objects({i: d.full_mask() for i, d in new.items()})
                for track_id, obj in added.items():
                    if obj.present:
                        present[track_id] = obj
                    else:  # an empty prompt: nothing to track
                        self.tracker.remove_objects([track_id])
                        self._live.discard(track_id)
        return [
            (
                track_id,
                MaskCandidate(
                    mask=obj.mask,
                    category_id=self._tracks[track_id].category_id,
                    score=self._tracks[track_id].score,
                    is_thing=True,
                ),
            )
            for track_id, obj in present.items()
        ]

    def frame(
        self,
        things: Sequence[tuple[int, MaskCandidate]],
        stuff: Sequence[MaskCandidate],
        *,
        output_size: tuple[int, int],
        is_keyframe: bool,
    ) -> FramePrediction:
        """Merge this frame's things (from :meth:`things`) and stuff candidates into its map,
        at ``output_size`` (``(width, height)``), with track ids as segment ids."""
        candidates = [cand for _, cand in things]
        ids = [track_id for track_id, _ in things]
        for cand in stuff:
            if cand.category_id not in self._stuff_ids:
                stuff_id = self._new_id(cand.category_id, is_thing=False, score=cand.score)
                self._stuff_ids[cand.category_id] = stuff_id
            candidates.append(cand)
            ids.append(self._stuff_ids[cand.category_id])
        if candidates:
            prediction = merge_panoptic(
                candidates, min_area=self.min_area, output_size=output_size, segment_ids=ids
            )
        else:
            prediction = merge_panoptic([], min_area=self.min_area, output_size=output_size)
        for seg in prediction.segments:
            self._tracks[seg.id].frames.append(self._frame)
        return FramePrediction(index=self._frame, prediction=prediction, is_keyframe=is_keyframe)

    def table(self) -> tuple[TrackInfo, ...]:
        """Every track so far that has pixels in at least one frame, by id."""
        return tuple(
            TrackInfo(
                track_id=track_id,
                category_id=track.category_id,
                is_thing=track.is_thing,
                frames=tuple(track.frames),
            )
            for track_id, track in sorted(self._tracks.items())
            if track.frames
        )

    @property
    def live_tracks(self) -> frozenset[int]:
        return frozenset(self._live)

    def _match(
        self, present: dict[int, TrackedObject], detections: Sequence[MaskCandidate]
    ) -> dict[int, MaskCandidate]:
        """Continue tracks with matching detections; new track ids for the others."""
        track_ids = list(present)
        used_tracks: set[int] = set()
        used_dets: set[int] = set()
        if track_ids:
            iou = mask_iou(
                np.stack([d.full_mask() for d in detections]),
                np.stack([present[i].mask for i in track_ids]),
            )
            order = np.argsort(-iou, axis=None, kind="stable")
            for d, t in zip(*np.unravel_index(order, iou.shape), strict=True):
                track_id = track_ids[t]
                if iou[d, t] < self.match_iou:
                    break
                if d in used_dets or track_id in used_tracks:
                    continue
                if self._tracks[track_id].category_id != detections[d].category_id:
                    continue
                used_dets.add(int(d))
                used_tracks.add(track_id)
                self._tracks[track_id].score = float(detections[d].score)
        new: dict[int, MaskCandidate] = {}
        for d, det in enumerate(detections):
            if d not in used_dets and det.mask.any():
                track_id = self._new_id(det.category_id, is_thing=True, score=det.score)
                self._live.add(track_id)
                new[track_id] = det
        return new

    def _new_id(self, category_id: int, *, is_thing: bool, score: float) -> int:
        if self._next_id > MAX_SEGMENT_ID:
            raise ValueError(f"a sequence cannot have more than {MAX_SEGMENT_ID} tracks")
        track_id = self._next_id
        self._next_id += 1
        self._tracks[track_id] = _Track(category_id, is_thing, float(score), [])
        return track_id
