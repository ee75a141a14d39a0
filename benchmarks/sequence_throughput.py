"""Frames per second of ``prelabel run`` on an image sequence: frame I/O in line vs overlapped.

One process, one run of each, against an in-process Segments emulator that adds
``--latency-ms`` (default 150 ms) to every request: per frame a download and two upload
requests (presign + storage POST), plus per sequence the listing, the label reads and the
write. Both runs share one loaded sequence pipeline (tiny random models unless ``--models``)
and label a fresh copy of the same ``--frames``-frame sequence with a fresh state directory:

(a) ``sequential``: ``worker.engine=sequential``, each frame downloaded, predicted and its
    bitmap uploaded in line (:class:`prelabel.run.frame_io.FrameIO` not overlapped);
(b) ``overlapped``: the default engine, the next frame downloading while one is predicted and
    the bitmaps uploading behind the model.

Each run is timed around ``run_dataset`` (connecting and checking the dataset included, model
loading not: a warm-up sequence loads the models first). It prints frames per second of both,
the ratio b/a, and one JSON line. Every frame of both runs must be labeled, or it exits 1.

Run: ``python benchmarks/sequence_throughput.py [--frames 30] [--latency-ms 150]
[--models DIR] [--device cpu]``
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from prelabel.config import ModelSettings, PipelineSettings, RemoteSettings, Settings
from prelabel.config import WorkerSettings as WorkerConfig
from prelabel.emulator import Emulator, FaultRule
from prelabel.emulator.sequences import moving_shapes, seed_sequence_dataset
from prelabel.run.dataset import run_dataset
from prelabel.run.job import RunOptions
from prelabel.run.models import PipelineLoader
from prelabel.state import StateStore

KEY = "bench-key"
CATEGORIES = (
    {"id": 1, "name": "person", "has_instances": True},
    {"id": 2, "name": "car", "has_instances": True},
    {"id": 3, "name": "road", "has_instances": False},
)


def run_once(
    emulator: Emulator,
    loader: PipelineLoader,
    settings: Settings,
    name: str,
    frames: int,
    tmp: Path,
) -> float:
    """Seconds to label one fresh copy of the sequence with ``settings``."""
    clip = moving_shapes(frames, seed=1)
    dataset = seed_sequence_dataset(emulator, f"jane/{name}", {"clip": clip}, CATEGORIES).dataset
    options = RunOptions(dataset=dataset, output_dir=tmp / name)
    with StateStore.in_dir(tmp / f"state-{name}") as state:
        start = time.perf_counter()
        summary = run_dataset(KEY, settings, options, state=state, load_pipeline=loader)
        seconds = time.perf_counter() - start
    if summary.counts.get("labeled") != 1:
        print(f"{name}: the sequence was not labeled: {summary.counts}", file=sys.stderr)
        sys.exit(1)
    return seconds


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--latency-ms", type=float, default=150.0)
    parser.add_argument("--models", type=Path, default=None, help="default: tiny random models")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as folder, Emulator(KEY) as emulator:
        tmp = Path(folder)
        models = args.models
        if models is None:
            from prelabel.weights.tiny import write_tiny_models

            models = write_tiny_models(tmp / "tiny", seed=0)
        pipeline = PipelineSettings(box_threshold=0.0, text_threshold=0.0, max_detections=3)
        base = Settings(
            models=ModelSettings(device=args.device),
            pipeline=pipeline,
            remote=RemoteSettings(api_url=emulator.url),
        )
        loader = PipelineLoader(base, models)
        run_once(emulator, loader, base, "warm-up", 2, tmp)  # loads every model
        emulator.set_faults([FaultRule(path="*", latency_s=args.latency_ms / 1000)])
        timings = {}
        for engine in ("sequential", "overlapped"):
            settings = base.model_copy(update={"worker": WorkerConfig(engine=engine)})
            timings[engine] = run_once(emulator, loader, settings, engine, args.frames, tmp)
        emulator.clear_faults()

    a, b = (args.frames / timings[e] for e in ("sequential", "overlapped"))
    print(f"frames per sequence: {args.frames}, latency per request: {args.latency_ms:.0f} ms")
    print(f"(a) sequential: {a:.2f} frames/s ({timings['sequential']:.1f} s)")
    print(f"(b) overlapped: {b:.2f} frames/s ({timings['overlapped']:.1f} s)")
    print(f"b/a: {b / a:.2f}")
    out = io.StringIO()
    json.dump(
        {
            "sequential_fps": round(a, 3),
            "overlapped_fps": round(b, 3),
            "b_over_a": round(b / a, 3),
            "frames": args.frames,
            "latency_ms": args.latency_ms,
        },
        out,
    )
    print(out.getvalue())


if __name__ == "__main__":
    main()
