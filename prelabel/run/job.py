"""A run's options and one sample's job: the values the steps, recorder and engines share."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from prelabel.formats.label import EncodedLabel
from prelabel.formats.sequence_label import FrameLabel, pooled_score
from prelabel.formats.vector_label import EncodedVectorLabel
from prelabel.panoptic import PanopticPrediction
from prelabel.run.outcome import Result, SampleOutcome
from prelabel.run.policy import Failure
from prelabel.segments.client import SampleRef
from prelabel.segments.upload import PendingLabel


@dataclass(frozen=True)
class RunOptions:
    dataset: str
    labelset: str = "ground-truth"
    limit: int | None = None
    dry_run: bool = False
    overwrite_prelabels: bool = False
    #: Also try samples parked after ``worker.max_attempts`` failures.
    retry_failed: bool = False
    #: report.json goes here, and with ``dry_run`` what would have been uploaded.
    output_dir: Path = Path("prelabel-output")


@dataclass(frozen=True)
class UploadedFrame:
    """A sequence frame whose bitmap is on the server: its label, score and source image.

    ``image_url`` is the sample frame's image it was predicted from: a record of another
    image (the sample's frames changed) is not reused. ``area`` (pixels in segments) weighs
    ``score`` in the sequence's score, so a resumed sequence scores as a fresh one; ``None``
    in a record written before it was kept.
    """

    label: FrameLabel
    score: float
    image_url: str | None
    area: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label.as_dict(),
            "score": self.score,
            "image_url": self.image_url,
            "area": self.area,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UploadedFrame:
        label = FrameLabel.from_dict(data["label"])
        area = data.get("area")
        return cls(
            label,
            float(data.get("score") or 0.0),
            data.get("image_url"),
            None if area is None else int(area),
        )


def sequence_label_score(frames: Sequence[UploadedFrame]) -> float:
    """The sequence's score from its frames: :func:`~prelabel.formats.sequence_label.pooled_score`
    (area-weighted). Frames recorded without an area (an older state file) weigh alike."""
    if any(frame.area is None for frame in frames):
        return sum(frame.score for frame in frames) / len(frames) if frames else 0.0
    return pooled_score((frame.score, frame.area or 0) for frame in frames)


@dataclass
class Job:
    """One sample on its way through the steps; what each step learns, the next one uses.

    Steps fill it in and return it; only the recorder turns it into state. A finished job
    (``outcome`` set, also early: skipped or failed) passes through later steps untouched.
    Every field is plain data, so a job can travel between Ray workers.
    """

    sample: SampleRef
    #: A label ready to write: from the resume state (uploaded by an earlier run), or uploaded
    #: by this run's deliver step (then ``uploaded`` is True).
    pending: PendingLabel | None = None
    uploaded: bool = False
    image: Image.Image | None = None
    prediction: PanopticPrediction | None = None
    encoded: EncodedLabel | None = None
    #: A box or polygon label, encoded (:class:`~prelabel.run.vector_steps.VectorSteps`).
    vector_label: EncodedVectorLabel | None = None
    #: An image sequence's frames whose bitmaps are uploaded, by frame index: from the resume
    #: state, or uploaded by this run's inference (frames stream out as they are predicted).
    frames: dict[int, UploadedFrame] = field(default_factory=dict)
    segments: int | None = None
    outcome: SampleOutcome | None = None
    #: Whether the recorder should write the outcome to the state file: not for a sample
    #: another worker holds, or one a person labeled meanwhile (nothing of ours happened).
    record_state: bool = True
    #: Whether this worker holds the sample's lease in the state store.
    leased: bool = False
    #: The failure was raised by the model, not by the sample's data (see the policy).
    model_error: bool = False
    started: float = field(default_factory=time.monotonic)
    #: Seconds the sample's own stages took (see :meth:`timed`), and when the one in progress
    #: began; ``seconds`` reports these, not time queued or spent loading the models.
    busy_s: float = 0.0
    stage_started: float | None = None
    timed_stages: int = 0

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Count the enclosed stage (fetch, infer, deliver) into the sample's ``seconds``."""
        self.stage_started = time.monotonic()
        self.timed_stages += 1
        try:
            yield
        finally:
            self.busy_s += time.monotonic() - self.stage_started
            self.stage_started = None

    def _seconds(self) -> float:
        """Time in the sample's own stages; from its creation where no stage was timed."""
        now = time.monotonic()
        if not self.timed_stages:
            return round(now - self.started, 3)
        running = now - self.stage_started if self.stage_started is not None else 0.0
        return round(self.busy_s + running, 3)

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    def finish(
        self,
        result: Result,
        *,
        reason: str | None = None,
        score: float | None = None,
        transient: bool = False,
        record_state: bool = True,
    ) -> None:
        """Set the outcome and drop what the sample no longer needs (image, prediction)."""
        self.outcome = SampleOutcome(
            self.sample.uuid,
            self.sample.name,
            result,
            reason=reason,
            segments=self.segments,
            score=score,
            transient=transient,
            seconds=self._seconds(),
        )
        self.record_state = record_state
        self.image = None
        self.prediction = None
        self.encoded = None
        self.vector_label = None
        self.frames = {}

    def fail(self, failure: Failure) -> None:
        self.finish("failed", reason=failure.reason, transient=failure.transient)
        self.model_error = failure.model
