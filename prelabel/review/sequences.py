"""Image sequences in the review session: a sequence predicted frame by frame, shown, pushed.

A sequence is predicted as ``prelabel run`` predicts it (the frames stream through the sequence
pipeline, :func:`~prelabel.run.frame_io.stream_frames`, objects keep one id across frames), but
the session keeps every frame and its prediction, so a person can look at them before pushing:
meant for the short clips one reviews, not for hours of video.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from prelabel.errors import SampleError
from prelabel.formats.label import label_score
from prelabel.formats.overlay import preview
from prelabel.formats.sequence_label import pooled_score
from prelabel.panoptic import PanopticPrediction, TrackInfo
from prelabel.run.frame_io import FrameIO, SequencePredictor, StreamedFrame, stream_frames
from prelabel.run.job import Job
from prelabel.run.policy import guarded
from prelabel.segments.client import SampleRef, SegmentsApi
from prelabel.segments.samples import load_frame
from prelabel.taxonomy import Taxonomy


@dataclass
class SequenceReviewItem:
    """One sequence with every frame's prediction; ids are track ids, the same on every frame."""

    sample: SampleRef
    frames: tuple[StreamedFrame, ...]
    tracks: tuple[TrackInfo, ...]
    taxonomy: Taxonomy = field(repr=False)

    @property
    def predictions(self) -> tuple[PanopticPrediction, ...]:
        return tuple(frame.predicted.prediction for frame in self.frames)

    @property
    def score(self) -> float:
        """The label score ``prelabel run`` would give the sequence (area-weighted over all
        its frames' segments, see the README)."""
        return pooled_score(
            (label_score(p), sum(s.area for s in p.segments)) for p in self.predictions
        )

    def rows(self) -> list[dict[str, object]]:
        """One row per track: id, category, thing/stuff, the frames it is in."""
        return [
            {
                "id": track.track_id,
                "category": self.taxonomy.category(track.category_id).name,
                "kind": "thing" if track.is_thing else "stuff",
                "frames": len(track.frames),
            }
            for track in self.tracks
        ]

    def preview(self, index: int = 0, max_width: int = 1024) -> Image.Image:
        """Frame ``index`` and its pre-label overlay side by side, with a legend below."""
        frame = self.frames[index]
        title = f"{self.sample.name} frame {index}: sequence score {self.score:.2f}"
        both = preview(
            frame.image, frame.predicted.prediction, self.taxonomy, title=title, side_by_side=True
        )
        if both.width <= max_width:
            return both
        height = max(1, round(both.height * max_width / both.width))
        return both.resize((max_width, height))


def predict_sequence(
    api: SegmentsApi,
    pipeline: SequencePredictor,
    taxonomy: Taxonomy,
    sample: SampleRef,
    *,
    max_pixels: int,
) -> SequenceReviewItem:
    """Download and predict every frame of ``sample``, under the run's failure policy.

    Raises:
        SampleError: the sequence failed (a frame cannot be read, ...), with the reason.
    """
    frames: list[StreamedFrame] = []

    def stream(job: Job) -> None:
        with FrameIO(overlapped=False, in_flight=0, threads=0) as io:
            frames.extend(
                stream_frames(
                    pipeline,
                    taxonomy,
                    lambda index: load_frame(api, sample, index, max_pixels=max_pixels),
                    len(sample.frames),
                    io,
                )
            )

    job = guarded(Job(sample), stream, in_model=True)
    if job.outcome is not None:
        raise SampleError(
            f"{sample.name}: {job.outcome.reason}", sample_uuid=sample.uuid, sample_name=sample.name
        )
    return SequenceReviewItem(sample, tuple(frames), tuple(pipeline.tracks), taxonomy)
