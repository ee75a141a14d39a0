"""Local mode for image sequences: folders of frames in, tracked pre-labels out.

Each folder is one sequence, its image files sorted by name are its frames. Per sequence
``OUT/<name>/`` gets ``bitmaps/<frame>.png`` (the Segments RGBA id bitmap; ids are track ids,
the same object has the same id in every frame), ``labels/<frame>.json`` (annotations and
score), ``overlays/<frame>.png`` (colours and names follow the track) and ``tracks.json``
(every track's id, category and frames). ``OUT/report.json`` has every sequence's outcome. A
folder that fails (an unreadable frame, no frames) is reported with its reason and the rest
go on, as in :mod:`prelabel.local`; folders go through the same driver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from prelabel.formats.atomic import write_json
from prelabel.formats.label import encode_label
from prelabel.formats.overlay import preview
from prelabel.formats.sequence_label import pooled_score
from prelabel.images import decode_image, find_images
from prelabel.local import LocalReport, drive_files, unique_names
from prelabel.panoptic import TrackInfo
from prelabel.progress import Progress
from prelabel.run.frame_io import FrameIO, SequencePredictor, stream_frames
from prelabel.run.job import Job
from prelabel.run.policy import guarded
from prelabel.run.steps import FrameCallback, UploadCallback
from prelabel.taxonomy import Taxonomy


def predict_sequences(
    folders: Sequence[Path],
    *,
    pipeline: SequencePredictor,
    taxonomy: Taxonomy,
    out_dir: Path,
    max_pixels: int,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> LocalReport:
    """Predict every folder as a sequence and write the outputs of the module docstring.

    Once ``should_stop()`` is true no new folder starts (the one in flight is finished)."""
    return drive_files(
        folders,
        FolderSequenceSteps(pipeline, taxonomy, out_dir, max_pixels),
        out_dir=out_dir,
        command="predict --sequence",
        description="predict sequences",
        progress=progress,
        should_stop=should_stop,
    )


def track_numbers(tracks: Sequence[TrackInfo]) -> dict[int, int]:
    """Track id -> 0-based number within its category, in order of first appearance: the
    overlay's name and colour of a track, the same on every frame."""
    seen: dict[int, int] = {}
    numbers = {}
    for track in sorted(tracks, key=lambda t: (t.frames[:1], t.track_id)):
        numbers[track.track_id] = seen.get(track.category_id, 0)
        seen[track.category_id] = numbers[track.track_id] + 1
    return numbers


class FolderSequenceSteps:
    """The unit of ``prelabel predict --sequence``: a folder's frames streamed through the
    sequence pipeline (:func:`~prelabel.run.frame_io.stream_frames`), each frame's files written
    as it comes out, then ``tracks.json``."""

    def __init__(
        self, pipeline: SequencePredictor, taxonomy: Taxonomy, out_dir: Path, max_pixels: int
    ) -> None:
        self.pipeline = pipeline
        self.taxonomy = taxonomy
        self.out_dir = out_dir
        self.max_pixels = max_pixels
        #: Each folder's frame files (fetch) and its pooled score (infer), by folder path.
        self._paths: dict[str, list[Path]] = {}
        self._scores: dict[str, float] = {}

    def load_models(self) -> object:
        return self.pipeline  # loaded by the caller

    def check(self, job: Job) -> Job:
        return job  # local files have no label that could change meanwhile

    def fetch(self, job: Job) -> Job:
        return guarded(job, self._list_frames)

    def infer_batch(self, jobs: list[Job], record_frame: FrameCallback | None = None) -> list[Job]:
        return [guarded(job, self._stream, in_model=True) for job in jobs]

    def deliver(self, job: Job, record_upload: UploadCallback) -> Job:
        self._paths.pop(job.sample.uuid, None)
        score = self._scores.pop(job.sample.uuid, None)
        return guarded(job, lambda j: j.finish("predicted", score=score))

    def _list_frames(self, job: Job) -> None:
        folder = Path(job.sample.uuid)
        paths = find_images([folder])
        if not paths:
            raise ValueError(f"no image files in {folder}")
        self._paths[job.sample.uuid] = paths

    def _stream(self, job: Job) -> None:
        paths, out = self._paths[job.sample.uuid], self.out_dir / job.sample.name
        for sub in ("bitmaps", "labels", "overlays"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        frame_names = unique_names(paths)
        scores: list[tuple[float, int]] = []
        with FrameIO(overlapped=False, in_flight=0, threads=0) as io:
            frames = stream_frames(
                self.pipeline,
                self.taxonomy,
                lambda index: decode_image(paths[index], max_pixels=self.max_pixels),
                len(paths),
                io,
            )
            for frame in frames:
                name, prediction = frame_names[frame.index], frame.predicted.prediction
                encoded = encode_label(prediction)
                scores.append((encoded.score, encoded.area))
                (out / "bitmaps" / f"{name}.png").write_bytes(encoded.png)
                write_json(
                    out / "labels" / f"{name}.json",
                    {
                        "image": str(paths[frame.index]),
                        "keyframe": frame.predicted.is_keyframe,
                        "annotations": [{**a, "track_id": a["id"]} for a in encoded.annotations],
                        "score": encoded.score,
                    },
                )
                drawn = preview(
                    frame.image,
                    prediction,
                    self.taxonomy,
                    title=f"{job.sample.name} frame {frame.index}: score {encoded.score:.2f}",
                    instance_numbers=track_numbers(self.pipeline.tracks),
                )
                drawn.save(out / "overlays" / f"{name}.png")
        tracks = [track.to_json() for track in self.pipeline.tracks]
        write_json(out / "tracks.json", {"tracks": tracks})
        job.segments = len(tracks)
        self._scores[job.sample.uuid] = pooled_score(scores)
