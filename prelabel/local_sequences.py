"""Local mode for image sequences: folders of frames in, tracked pre-labels out.

Each folder is one sequence, its image files sorted by name are its frames. Per sequence
``OUT/<name>/`` gets ``bitmaps/<frame>.png`` (the Segments RGBA id bitmap; ids are track ids,
the same object has the same id in every frame), ``labels/<frame>.json`` (annotations and
score), ``overlays/<frame>.png`` (colours and names follow the track) and ``tracks.json``
(every track's id, category and frames). ``OUT/report.json`` has every sequence's outcome. A
folder that fails (an unreadable frame, no frames) is reported with its reason and the rest
go on, as in :mod:`prelabel.local`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from prelabel.formats.atomic import write_json
from prelabel.formats.label import encode_label
from prelabel.formats.overlay import preview
from prelabel.formats.sequence_label import pooled_score
from prelabel.images import decode_image, find_images
from prelabel.local import FileJob, LocalReport, run_each, unique_names
from prelabel.panoptic import TrackInfo
from prelabel.progress import NullProgress, Progress
from prelabel.run.outcome import SampleOutcome
from prelabel.run.report import ReportWriter
from prelabel.run.sequence_steps import SequencePredictor
from prelabel.taxonomy import Taxonomy


def predict_sequences(
    folders: Sequence[Path],
    *,
    pipeline: SequencePredictor,
    taxonomy: Taxonomy,
    out_dir: Path,
    max_pixels: int,
    progress: Progress | None = None,
) -> LocalReport:
    """Predict every folder as a sequence and write the outputs of the module docstring."""
    progress = progress or NullProgress()
    outcomes = run_each(
        folders,
        lambda folder, name: _PredictSequence(
            folder, out_dir / name, pipeline, taxonomy, max_pixels
        ),
        progress,
        "predict sequences",
    )
    ReportWriter(out_dir / "report.json", {"command": "predict --sequence"}).write_all(outcomes)
    return LocalReport(outcomes=tuple(outcomes), out_dir=out_dir)


def track_numbers(tracks: Sequence[TrackInfo]) -> dict[int, int]:
    """Track id -> 0-based number within its category, in order of first appearance: the
    overlay's name and colour of a track, the same on every frame."""
    seen: dict[int, int] = {}
    numbers = {}
    for track in sorted(tracks, key=lambda t: (t.frames[:1], t.track_id)):
        numbers[track.track_id] = seen.get(track.category_id, 0)
        seen[track.category_id] = numbers[track.track_id] + 1
    return numbers


@dataclass(frozen=True)
class _PredictSequence:
    """The work on one folder: stream its frames through the sequence pipeline."""

    folder: Path
    out: Path
    pipeline: SequencePredictor
    taxonomy: Taxonomy
    max_pixels: int

    def __call__(self, job: FileJob) -> None:
        start = time.perf_counter()
        paths = find_images([self.folder])
        if not paths:
            raise ValueError(f"no image files in {self.folder}")
        for sub in ("bitmaps", "labels", "overlays"):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
        frame_names = unique_names(paths)
        shown: deque[Image.Image] = deque()
        scores: list[tuple[float, int]] = []
        predictions = self.pipeline.predict_frames(self._frames(paths, shown), self.taxonomy)
        for index, predicted in enumerate(predictions):
            image, name = shown.popleft(), frame_names[index]
            prediction = predicted.prediction
            encoded = encode_label(prediction)
            scores.append((encoded.score, encoded.area))
            (self.out / "bitmaps" / f"{name}.png").write_bytes(encoded.png)
            write_json(
                self.out / "labels" / f"{name}.json",
                {
                    "image": str(paths[index]),
                    "keyframe": predicted.is_keyframe,
                    "annotations": [{**a, "track_id": a["id"]} for a in encoded.annotations],
                    "score": encoded.score,
                },
            )
            drawn = preview(
                image,
                prediction,
                self.taxonomy,
                title=f"{job.sample.name} frame {index}: score {encoded.score:.2f}",
                instance_numbers=track_numbers(self.pipeline.tracks),
            )
            drawn.save(self.out / "overlays" / f"{name}.png")
        tracks = [track.to_json() for track in self.pipeline.tracks]
        write_json(self.out / "tracks.json", {"tracks": tracks})
        job.outcome = SampleOutcome(
            job.sample.uuid,
            job.sample.name,
            "predicted",
            segments=len(tracks),
            score=pooled_score(scores),
            seconds=round(time.perf_counter() - start, 3),
        )

    def _frames(self, paths: list[Path], shown: deque[Image.Image]) -> Iterator[Image.Image]:
        """Decode frames one at a time as the pipeline asks; each is kept for its overlay
        until its prediction comes out (the pipeline may read ahead)."""
        for path in paths:
            image = decode_image(path, max_pixels=self.max_pixels)
            shown.append(image)
            yield image
