"""``SequencePipeline.predict_frames(frames, taxonomy)``: panoptic maps of an image sequence
whose segment ids are track ids, one frame at a time.

Why a separate predictor: a sequence needs ids that hold across frames, which single-image
predictions cannot give, and it must stream (a 500-frame sequence may not sit in memory). Per
frame, in order:

1. the working image (as :meth:`Pipeline.predict`: RGB, at most ``max_image_side``) and ONE
   back-end session (its image encoders run once), shared by the thing and the stuff branch;
2. SAM 2 propagates the live tracks to the frame (:class:`~prelabel.backends.sam2_video.tracker.
   Sam2Tracker`); tracks whose object is gone end;
3. on keyframes (frame 0 and every ``sequence.keyframe_interval``) the configured back-end's
   thing candidates are matched to the tracks (:class:`~.tracks.TrackLedger`): matches
   continue, the rest become new SAM 2 objects;
4. the back-end's stuff candidates, with the tracked things' pixels taken away as for images;
5. the merge at the frame's own size with track ids as segment ids.

Frames are pulled from the iterable only when the previous result has been consumed, and the
tracker prunes its state, so memory stays flat in the number of frames.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from prelabel.backends import load_backend
from prelabel.backends.sam2_video.loading import LoadedTracker, load_sam2_video
from prelabel.backends.sam2_video.tracker import Sam2Tracker
from prelabel.config import SequenceSettings, Settings
from prelabel.panoptic import FramePrediction, MaskCandidate, TrackInfo
from prelabel.pipeline.clock import Timings
from prelabel.pipeline.pipeline import Pipeline
from prelabel.pipeline.tracks import TrackedObject, Tracker, TrackLedger
from prelabel.taxonomy import Taxonomy

__all__ = ["SequencePipeline"]


class SequencePipeline:
    """The image :class:`Pipeline` plus a SAM 2 video tracker.

    The tracker model is loaded on the first sequence (unless given), so building this for a
    run that turns out to have no sequences costs nothing. After :meth:`predict_frames` has
    been consumed, :attr:`tracks` holds that sequence's track table.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        settings: Settings,
        models_dir: Path | None = None,
        *,
        tracker_model: LoadedTracker | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.settings: SequenceSettings = settings.sequence
        self._models = settings.models
        self._models_dir = models_dir
        self._tracker_model = tracker_model
        self.tracks: tuple[TrackInfo, ...] = ()

    @classmethod
    def load(cls, settings: Settings, models_dir: Path | None = None) -> SequencePipeline:
        """Load the image models now and the SAM 2 video model at the first sequence."""
        backend = load_backend(settings, models_dir)
        return cls(Pipeline(backend, settings.pipeline), settings, models_dir)

    @property
    def tracker_model(self) -> LoadedTracker:
        """The SAM 2 video model, loaded on first use (``models.sam2_video``, or
        ``DIR/sam2_video`` with ``--models DIR``)."""
        if self._tracker_model is None:
            self._tracker_model = load_sam2_video(self._models, self._models_dir)
        return self._tracker_model

    @property
    def is_tiny(self) -> bool:
        """True when any model in use is a tiny random-weight one (masks are meaningless)."""
        tiny = self.pipeline.is_tiny
        return tiny or (self._tracker_model is not None and self._tracker_model.is_tiny)

    def new_tracker(self) -> Tracker:
        return Sam2Tracker(self.tracker_model.model)

    def predict_frames(
        self,
        frames: Iterable[Image.Image],
        taxonomy: Taxonomy,
        *,
        tracker: Tracker | None = None,
        timings: Timings | None = None,
    ) -> Iterator[FramePrediction]:
        """One :class:`FramePrediction` per frame, in order, consuming ``frames`` lazily.

        Each prediction is at its frame's own size (frames may differ in size); ids are track
        ids, unique in the sequence. ``tracker`` replaces SAM 2 (tests); ``timings`` adds
        ``track`` to the image pipeline's stages. :attr:`tracks` is updated after every frame.
        """
        pipeline = self.pipeline
        taxonomy = pipeline.fit(taxonomy)
        if tracker is None:
            # Stuff alone needs no tracker (nor SAM 2's weights): its ids are per category.
            tracker = self.new_tracker() if taxonomy.things else _NoTracker()
        ledger = TrackLedger(
            tracker,
            match_iou=self.settings.match_iou,
            min_area=pipeline.settings.min_area,
        )
        clock = pipeline.clock(timings)
        self.tracks = ()
        for index, frame in enumerate(frames):
            working = pipeline.working_image(frame)
            is_keyframe = index % self.settings.keyframe_interval == 0
            (session,) = pipeline.backend.open_batch(
                [working.image], taxonomy, pipeline.settings, clock
            )
            detections = None
            if is_keyframe and taxonomy.things:
                detections = session.things()
            with clock("track"):
                things = ledger.things(working.image, detections)
            stuff: list[MaskCandidate] = []
            if taxonomy.stuff:
                stuff = session.stuff([cand for _, cand in things])
            with clock("merge"):
                result = ledger.frame(
                    things, stuff, output_size=working.original_size, is_keyframe=is_keyframe
                )
            self.tracks = ledger.table()
            yield result


class _NoTracker:
    """The tracker of a taxonomy without things: there is never an object to follow."""

    def advance(self, image: Image.Image) -> dict[int, TrackedObject]:
        return {}

    def add_objects(self, masks: dict[int, npt.NDArray[np.bool_]]) -> dict[int, TrackedObject]:
        raise AssertionError("no things to track")

    def remove_objects(self, ids: Iterable[int]) -> None:
        pass
