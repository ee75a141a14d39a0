"""Image sequences: peak memory against sequence length, and SAM 2 video tracking speed.

1. Memory (tiny models). ``SequencePipeline.predict_frames`` must keep memory flat in the
   number of frames: frames are pulled lazily and the SAM 2 session is pruned after every
   frame. This predicts a 50-frame and a 500-frame synthetic sequence (a few bright squares
   drifting over noise, 160x120), each in a fresh subprocess with the tiny random-weight
   models (``prelabel models tiny``, written to a temporary folder), throws every result away
   as a caller that uploads frame by frame would, and reads each child's peak RSS from
   ``os.wait4``. Target: 500-frame peak / 50-frame peak < 1.2.

   By default only frame 0 is a keyframe (``--keyframe-interval`` = the frame count) with at
   most 3 detections, and the tracker keeps every object present (a subclass overrides the
   tiny model's random object scores, which would end tracks at random), so both runs track
   the same objects from frame 0 to the end and the ratio measures frames, not objects. With
   ``--keyframe-interval 10`` new tracks keep joining (nothing ends), so memory then grows
   with the number of live tracks, as it would with real objects.

2. Speed (full-size architecture, random weights). Frames per second of SAM 2 video tracking
   with ``facebook/sam2.1-hiera-large``'s architecture: configs cannot be downloaded here, so
   the config is built from hiera-large's published hyperparameters (Hiera embed dim 144,
   2 heads, stages 2-6-36-4, global attention blocks 23/33/43, windows 8/4/16/8, FPN 256;
   memory attention, encoder and the rest at transformers' defaults, which are SAM 2.1's).
   ``--objects`` objects are prompted with masks on frame 0, then ``--speed-frames`` frames
   are tracked on whatever device is present (CUDA if available). Random weights track
   nonsense but cost what real ones cost. ``--speed-frames 0`` skips it.

Run: ``python benchmarks/sequence_memory.py [--frames 50 500] [--objects 1] [--speed-frames 3]``.
The memory part costs about 0.3 s per tiny frame on an idle CPU core (the 500-frame run took
15 min on a shared, busy 2-core machine); measured there: 817.0 MB for 50 frames, 819.5 MB
for 500, ratio 1.003, 3 SAM 2 objects tracked throughout, 15 frames held at the end. The speed
part takes tens of seconds per frame and object on a CPU. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TARGET_RATIO = 1.2


def synthetic_frames(count: int, size: tuple[int, int] = (160, 120)) -> Iterator[Image.Image]:
    """Three bright squares drifting over fresh noise, made one frame at a time."""
    width, height = size
    rng = np.random.default_rng(0)
    for k in range(count):
        array = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
        for n, (x, y) in enumerate([(10, 10), (60, 50), (110, 20)]):
            dx = int(20 * np.sin(k / 15 + n))
            array[y : y + 30, x + dx + 20 : x + dx + 50] = (250, 80 * n, 40)
        yield Image.fromarray(array)


def _persistent_tracker_class() -> type:
    from prelabel.backends.sam2_video.tracker import Sam2Tracker
    from prelabel.pipeline.tracks import TrackedObject

    class Persistent(Sam2Tracker):
        """Every object stays present: the tiny model's random object scores would otherwise
        end tracks at random and leave the runs with different numbers of objects."""

        def _objects(self, output: object) -> dict[int, TrackedObject]:
            return {
                obj_id: TrackedObject(obj.mask, present=True, score=obj.score)
                for obj_id, obj in super()._objects(output).items()
            }

    return Persistent


def child(models: Path, frames: int, keyframe_interval: int) -> None:
    """Predict one sequence and print a JSON summary (runs in the subprocess)."""
    from prelabel.config import PipelineSettings, SequenceSettings, Settings
    from prelabel.pipeline.sequence import SequencePipeline
    from prelabel.taxonomy import Category, build_taxonomy

    pipeline = PipelineSettings(
        box_threshold=0.0, text_threshold=0.0, shrink_kernel=2, min_area=0, max_detections=3
    )
    settings = Settings(
        models={"device": "cpu"},
        pipeline=pipeline,
        sequence=SequenceSettings(keyframe_interval=keyframe_interval),
    )
    taxonomy = build_taxonomy(
        [Category(1, "person", True), Category(2, "car", True), Category(3, "road", False)],
        {},
        pipeline,
    )
    sequence = SequencePipeline.load(settings, models)
    _Persistent = _persistent_tracker_class()
    tracker = _Persistent(sequence.tracker_model.model)
    start = time.perf_counter()
    count = segments = things = 0
    for result in sequence.predict_frames(synthetic_frames(frames), taxonomy, tracker=tracker):
        count += 1
        segments += len(result.prediction.segments)
        things += sum(1 for s in result.prediction.segments if s.is_thing)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "frames": count,
                "seconds": round(seconds, 1),
                "segments": segments,
                "thing_segments": things,
                "tracks": len(sequence.tracks),
                "sam2_objects_at_end": len(tracker.session.obj_ids),
                "sam2_frames_held_at_end": tracker.stored_frames(),
                "tiny": sequence.is_tiny,
            }
        )
    )


def measure(models: Path, frames: int, keyframe_interval: int, threads: int) -> dict[str, object]:
    """Run :func:`child` in a fresh process; its summary plus its peak RSS (``os.wait4``)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        __file__,
        "--child",
        str(models),
        str(frames),
        str(keyframe_interval),
    ]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=log)
        assert proc.stdout is not None
        stdout = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace"))
            raise SystemExit(f"child for {frames} frames failed ({proc.returncode})")
    summary: dict[str, object] = json.loads(stdout.decode().strip().splitlines()[-1])
    # ru_maxrss is KiB on Linux, bytes on macOS.
    scale = 1024 if sys.platform != "darwin" else 1
    summary["peak_rss_mb"] = round(usage.ru_maxrss * scale / 1e6, 1)
    return summary


def hiera_large_config() -> object:
    """``facebook/sam2.1-hiera-large``'s architecture (see the module docstring)."""
    from transformers import Sam2VideoConfig

    return Sam2VideoConfig(
        vision_config={
            "backbone_config": {
                "model_type": "sam2_hiera_det_model",
                "hidden_size": 144,
                "num_attention_heads": 2,
                "blocks_per_stage": [2, 6, 36, 4],
                "embed_dim_per_stage": [144, 288, 576, 1152],
                "num_attention_heads_per_stage": [2, 4, 8, 16],
                "window_size_per_stage": [8, 4, 16, 8],
                "global_attention_blocks": [23, 33, 43],
                "window_positional_embedding_background_size": [7, 7],
            },
            "backbone_channel_list": [1152, 576, 288, 144],
            "fpn_hidden_size": 256,
        },
    )


def speed(frames: int, objects: int) -> dict[str, object]:
    import torch
    from transformers import Sam2VideoModel

    from prelabel.backends.sam2_video.tracker import Sam2Tracker

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = Sam2VideoModel(hiera_large_config()).to(device).eval()
    params = sum(p.numel() for p in model.parameters())
    images = list(synthetic_frames(frames + 1, (1280, 720)))
    tracker = Sam2Tracker(model)
    tracker.advance(images[0])
    masks = {}
    for n in range(objects):
        mask = np.zeros((720, 1280), dtype=bool)
        x = 40 + (n * 97) % 1100
        mask[100 + (n * 53) % 500 : 200 + (n * 53) % 500, x : x + 120] = True
        masks[n + 1] = mask
    tracker.add_objects(masks)
    start = time.perf_counter()
    for image in images[1:]:
        tracker.advance(image)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "device": str(device),
        "parameters_m": round(params / 1e6, 1),
        "objects": objects,
        "frames": frames,
        "seconds": round(seconds, 2),
        "fps": round(frames / seconds, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--keyframe-interval", type=int, default=0, help="0 = the frame count")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--objects", type=int, default=1)
    parser.add_argument("--speed-frames", type=int, default=3)
    args = parser.parse_args()

    from prelabel.weights.tiny import write_tiny_models

    report: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = write_tiny_models(Path(tmp) / "models")
        runs = []
        for frames in sorted(args.frames):
            interval = args.keyframe_interval or frames
            run = measure(models, frames, interval, args.threads)
            runs.append(run)
            print(
                f"{run['frames']:>4} frames: peak RSS {run['peak_rss_mb']} MB, "
                f"{run['seconds']} s, {run['tracks']} tracks with pixels, "
                f"{run['sam2_objects_at_end']} SAM 2 objects and "
                f"{run['sam2_frames_held_at_end']} frames held at the end, "
                f"keyframe interval {interval}",
                flush=True,
            )
    ratio = float(runs[-1]["peak_rss_mb"]) / float(runs[0]["peak_rss_mb"])  # type: ignore[arg-type]
    verdict = "ok" if ratio < TARGET_RATIO else "OVER TARGET"
    print(
        f"peak RSS ratio {runs[-1]['frames']}/{runs[0]['frames']} frames: {ratio:.3f} "
        f"(target < {TARGET_RATIO}: {verdict})",
        flush=True,
    )
    report["memory"] = runs
    report["ratio"] = round(ratio, 3)
    if args.speed_frames:
        result = speed(args.speed_frames, args.objects)
        print(
            f"SAM 2.1 hiera-large architecture ({result['parameters_m']} M parameters, random "
            f"weights) on {result['device']}: {result['objects']} object(s), "
            f"{result['frames']} frames in {result['seconds']} s = {result['fps']} frames/s",
            flush=True,
        )
        report["speed"] = result
    print(json.dumps(report))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
