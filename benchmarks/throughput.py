"""Images per second of the pipelined worker against the sequential loop and inference alone.

One process, one run, against an in-process Segments emulator that adds ``--latency-ms``
(default 150 ms) to every request it answers: the API calls (listing, label reads and write,
asset creation) and the storage transfers (image downloads, bitmap uploads) alike; the requests
of each run are counted by kind and printed (6 per sample at the time of writing: the label
read when a sample starts, the image download, ``POST /assets/``, the presigned upload, the
label re-read before writing and the label ``PUT``). The three measurements share one loaded
:class:`Pipeline` (tiny random models by default) and the same ``--samples`` images:

(a) ``sequential``: :class:`~prelabel.run.dataset.DatasetWorker` with ``worker.engine=sequential``,
    the loop built from the same begin/fetch/infer/deliver steps, one sample at a time;
(b) ``pipelined``: the same worker with ``worker.engine=overlapped``
    (:func:`prelabel.run.overlapped.run_overlapped`);
(c) ``inference``: ``Pipeline.predict`` alone over the same images, decoded into memory
    beforehand (no download, no PNG encoding, no upload). ``encode_label`` is timed separately
    and printed, but is not part of (c). (c) runs twice, before (a) and after (b), and the
    figure is over both passes, so a change in the machine's load during the run weighs on
    both sides of b/c.

(a) and (b) are timed around ``DatasetWorker.run()``: listing included, connecting and checking
the dataset (once per run) not. Each runs on a fresh dataset with the same images and a fresh
state directory, and must label every sample. A pipelined run also pays, once, the latency
before its first prediction (listing, label read, download: 3 requests) and after its last one
(the 4 requests of the delivery); with 40 samples that is a few percent of b.

It prints images per second for each, the ratios b/a and b/c, the peak RSS of the process
(``ru_maxrss``), then one JSON line whose first keys are ``sequential_ips, pipelined_ips,
inference_ips, b_over_a, b_over_c, peak_rss_mb, latency_ms, samples``; further keys follow.
Where the time goes is printed too: milliseconds per ``predict`` call inside (a) and (b) against
(c), and the share of each run during which the model was busy.

Memory (``--memory-samples N``, 0 to skip): after the throughput phases, one pipelined run over
N samples of ``--memory-size`` images (16x16) with no added latency, served by an emulator in a
child process (its store and request log would otherwise grow this process's RSS with the
count). The current RSS (``/proc/self/statm``) and the high-water mark are printed every
``--memory-every`` samples; flat memory means the RSS stops rising after the first checkpoint.
The tiny models pad every image to SAM's 1024x1024, so one prediction costs about 0.3-0.4 s on
the 2-core CPU box whatever the image size: 10,000 samples take about an hour there, which is
why the default is 1,000 (about 6 minutes). ``--memory-samples 10000`` does the full run.

With ``--models DIR --device cuda`` the same measurements run on the models in DIR (real
weights, or random ones: same compute); ``--full-size`` builds random-weight models of the real
architectures first (as ``benchmarks/pipeline_stages.py`` does: SAM ViT-B, Grounding DINO tiny,
CLIPSeg rd64), e.g. ``--full-size --device cuda --size 1280x720 --memory-samples 0``.

Torch's intra-op thread count is left at its default unless ``--torch-threads N`` is given; it
is printed. On a machine whose cores other processes also use, more than one thread makes the
CPU figures swing by several times from one run to the next (OpenMP threads wait on each other
at every operator); one thread is slower but steady.

Run: ``python benchmarks/throughput.py [--samples 40] [--latency-ms 150] [--size 64x48]
[--fetch-workers 4] [--prefetch 8] [--batch-size 1] [--deliver-workers 4] [--deliver-queue 8]
[--memory-samples 1000] [--torch-threads N] [--models DIR | --full-size] [--device cpu]``
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from prelabel.backends.grounded_sam.backend import GroundedSam
from prelabel.backends.grounded_sam.loading import load_models
from prelabel.config import ModelSettings, PipelineSettings, RemoteSettings, Settings
from prelabel.config import WorkerSettings as WorkerConfig
from prelabel.emulator import Emulator, FaultRule
from prelabel.formats.label import encode_label
from prelabel.images import decode_image
from prelabel.panoptic import PanopticPrediction
from prelabel.pipeline.pipeline import Pipeline
from prelabel.run.dataset import DatasetWorker
from prelabel.run.job import RunOptions
from prelabel.run.report import RunSummary
from prelabel.run.steps import SampleSteps
from prelabel.segments.client import SegmentsApi
from prelabel.segments.dataset import check_dataset
from prelabel.state import StateStore
from prelabel.taxonomy import Taxonomy

KEY = "benchmark-key"
LABELSET = "ground-truth"
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")

#: Two things and two stuff categories, as in the connector tests.
CATEGORIES: tuple[dict[str, Any], ...] = (
    {"id": 1, "name": "person", "has_instances": True, "color": [220, 20, 60]},
    {"id": 2, "name": "car", "has_instances": True, "color": [0, 0, 142]},
    {"id": 3, "name": "sky", "has_instances": False, "color": [70, 130, 180]},
    {"id": 4, "name": "road", "has_instances": False, "color": [128, 64, 128]},
)

# --- helpers ------------------------------------------------------------------------------------


def png_bytes(width: int, height: int, seed: int) -> bytes:
    """A deterministic noise RGB PNG (different seeds give different pixels)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def rss_mb() -> float:
    """Current resident set size in MB (Linux /proc; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES / 2**20
    except OSError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """The process's RSS high-water mark (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _machine_busy_s() -> float:
    """CPU seconds all processes of the machine spent busy so far (Linux /proc/stat)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """Cores kept busy by *other* processes while a phase runs: the machine's busy CPU time
    minus this process's (and its children's), over the wall time. On a shared machine this
    says how far a phase's figure was disturbed from outside."""

    cores = 0.0

    def __enter__(self) -> OtherLoad:
        self._busy, self._own, self._wall = _machine_busy_s(), self._own_s(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._wall
        other = _machine_busy_s() - self._busy - (self._own_s() - self._own)
        self.cores = max(0.0, other / wall) if wall > 0 else 0.0

    @staticmethod
    def _own_s() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


class CountingProgress:
    """A :class:`~prelabel.progress.Progress` that calls ``every(n)`` each ``step`` samples."""

    def __init__(self, step: int, every: Callable[[int], None]) -> None:
        self._step = step
        self._every = every
        self.done = 0

    def start(self, total: int | None, description: str) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        for _ in range(n):
            self.done += 1
            if self.done % self._step == 0:
                self._every(self.done)

    def note(self, **fields: object) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class WorkerRun:
    seconds: float
    summary: RunSummary
    samples: int
    #: Seconds spent in ``Pipeline.predict`` during the run.
    predict_seconds: float

    @property
    def ips(self) -> float:
        return self.samples / self.seconds


def run_worker(
    url: str,
    dataset: str,
    settings: Settings,
    pipeline: Pipeline,
    work_dir: Path,
    progress: CountingProgress | None = None,
) -> WorkerRun:
    """Connect, prepare, then time ``DatasetWorker.run()`` over ``dataset``."""
    api = SegmentsApi.connect(KEY, settings.remote)
    state = StateStore.in_dir(work_dir / "state")
    try:
        options = RunOptions(dataset=dataset, labelset=LABELSET, output_dir=work_dir / "out")
        _, taxonomy = check_dataset(api, settings, options.dataset, options.labelset)
        timed = TimedPipeline(pipeline)
        worker = DatasetWorker(SampleSteps(api, settings, options, taxonomy, lambda: timed), state)
        started = time.perf_counter()
        summary = worker.run(progress)
        seconds = time.perf_counter() - started
    finally:
        state.close()
        api.close()
    done = sum(summary.counts.values())
    if summary.counts.get("labeled", 0) != done:
        raise RuntimeError(f"{dataset}: not every sample was labeled: {dict(summary.counts)}")
    return WorkerRun(seconds, summary, done, timed.seconds)


def worker_settings(args: argparse.Namespace) -> WorkerConfig:
    return WorkerConfig(
        fetch_workers=args.fetch_workers,
        prefetch=args.prefetch,
        batch_size=args.batch_size,
        deliver_workers=args.deliver_workers,
        deliver_queue=args.deliver_queue,
    )


def make_settings(
    url: str, pipeline: PipelineSettings, device: str, worker: WorkerConfig
) -> Settings:
    remote = RemoteSettings(
        api_url=url,
        connect_timeout_s=10,
        read_timeout_s=60,
        retry_attempts=3,
        retry_initial_s=0.01,
        retry_max_s=0.1,
    )
    return Settings(
        models=ModelSettings(device=device), pipeline=pipeline, remote=remote, worker=worker
    )


def load_pipeline(args: argparse.Namespace, pipeline_settings: PipelineSettings) -> Pipeline:
    """Tiny models written to a temporary folder, or ``--models DIR``, through load_models."""
    models_dir: Path = args.models
    if models_dir is None and args.full_size:
        # Real architectures with random weights, as benchmarks/pipeline_stages.py builds them.
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from pipeline_stages import write_full_size_models

        print("building full-size random models ...", flush=True)
        models_dir = write_full_size_models(Path(tempfile.mkdtemp(prefix="full-models-")))
    elif models_dir is None:
        from prelabel.weights.tiny import write_tiny_models

        models_dir = write_tiny_models(Path(tempfile.mkdtemp(prefix="tiny-models-")), seed=0)
    models = load_models(ModelSettings(device=args.device), models_dir)
    return Pipeline(GroundedSam(models), pipeline_settings)


def taxonomy_for(pipeline_settings: PipelineSettings) -> Taxonomy:
    from prelabel.taxonomy import build_taxonomy, categories_from_task_attributes

    task_attributes = {"format_version": "0.1", "categories": list(CATEGORIES)}
    return build_taxonomy(categories_from_task_attributes(task_attributes), {}, pipeline_settings)


class TimedPipeline(Pipeline):
    """The same models, adding up the seconds spent in ``predict`` (the inference stage)."""

    def __init__(self, pipeline: Pipeline) -> None:
        super().__init__(pipeline.backend, pipeline.settings)
        self.seconds = 0.0
        self.calls = 0

    def predict(self, image: Image.Image, taxonomy: Taxonomy, **kwargs: Any) -> PanopticPrediction:
        started = time.perf_counter()
        try:
            return super().predict(image, taxonomy, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1


def sync_device(pipeline: Pipeline) -> None:
    if pipeline.backend.device.type == "cuda":
        torch.cuda.synchronize(pipeline.backend.device)


# --- throughput --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inference:
    seconds: float
    encode_seconds: float
    samples: int

    @property
    def ips(self) -> float:
        return self.samples / self.seconds


def measure_inference(pipeline: Pipeline, taxonomy: Taxonomy, images: Sequence[bytes]) -> Inference:
    """(c): ``Pipeline.predict`` over images decoded beforehand; encode timed on the side."""
    max_pixels = PipelineSettings().max_image_pixels
    decoded = [decode_image(data, max_pixels=max_pixels) for data in images]
    predictions = []
    sync_device(pipeline)
    started = time.perf_counter()
    for image in decoded:
        predictions.append(pipeline.predict(image, taxonomy))
    sync_device(pipeline)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    for prediction in predictions:
        encode_label(prediction)
    encode_seconds = time.perf_counter() - started
    return Inference(seconds, encode_seconds, len(decoded))


def seed_dataset(emulator: Emulator, name: str, images: Sequence[bytes]) -> str:
    full_name = f"{emulator.username}/{name}"
    emulator.create_dataset(full_name, categories=[dict(c) for c in CATEGORIES])
    samples = [
        {
            "name": f"image_{i:05d}.png",
            "attributes": {"image": {"url": emulator.add_asset(data, f"{name}_{i:05d}.png")}},
        }
        for i, data in enumerate(images)
    ]
    emulator.add_samples(full_name, samples)
    return full_name


def check_latency_applies(emulator: Emulator, samples: int) -> dict[str, int]:
    """Requests of the last run by kind; all are answered by the latency rule."""
    kinds: dict[str, int] = {}
    for record in emulator.requests:
        if record.path.startswith("/s3/"):
            kind = "image download" if record.method == "GET" else f"{record.method} /s3/"
        elif record.path.startswith("/s3-upload/"):
            kind = "bitmap upload"
        else:
            kind = f"{record.method} /{record.path.strip('/').split('/')[0]}/"
        kinds[kind] = kinds.get(kind, 0) + 1
    if kinds.get("image download", 0) < samples or kinds.get("bitmap upload", 0) < samples:
        raise RuntimeError(f"downloads and uploads did not go through the emulator: {kinds}")
    return kinds


def throughput(
    args: argparse.Namespace, pipeline: Pipeline, pipeline_settings: PipelineSettings
) -> dict[str, Any]:
    size = parse_size(args.size)
    images = [png_bytes(*size, seed=i) for i in range(args.samples)]
    taxonomy = taxonomy_for(pipeline_settings)
    latency_s = args.latency_ms / 1000
    worker_config = worker_settings(args)
    # Warm-up: first-call costs (lazy init, allocator, kernels) are not per-image costs.
    warm = decode_image(images[0], max_pixels=PipelineSettings().max_image_pixels)
    for _ in range(2):
        pipeline.predict(warm, taxonomy)

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp, Emulator(KEY) as emulator:
        emulator.set_faults([FaultRule(path="*", latency_s=latency_s)])
        base = make_settings(emulator.url, pipeline_settings, args.device, worker_config)

        other: dict[str, float] = {}
        print(f"(c) inference alone over {args.samples} decoded images ...", flush=True)
        with OtherLoad() as load:
            before = measure_inference(pipeline, taxonomy, images)
        other["c_before"] = load.cores

        runs: dict[str, WorkerRun] = {}
        for mode, engine in (("a", "sequential"), ("b", "overlapped")):
            print(f"({mode}) {engine} worker over {args.samples} samples ...", flush=True)
            dataset = seed_dataset(emulator, f"bench-{engine}", images)
            settings = base.model_copy(
                update={"worker": worker_config.model_copy(update={"engine": engine})}
            )
            emulator.clear_requests()
            with OtherLoad() as load:
                runs[engine] = run_worker(
                    emulator.url, dataset, settings, pipeline, Path(tmp) / engine
                )
            other[mode] = load.cores
            results[f"requests_{engine}"] = check_latency_applies(emulator, args.samples)

        print(f"(c) inference alone again, {args.samples} images ...", flush=True)
        with OtherLoad() as load:
            after = measure_inference(pipeline, taxonomy, images)
        other["c_after"] = load.cores
        inference = Inference(
            before.seconds + after.seconds,
            before.encode_seconds + after.encode_seconds,
            before.samples + after.samples,
        )

    a, b, c = runs["sequential"].ips, runs["overlapped"].ips, inference.ips
    print()
    device = pipeline.backend.device
    print(f"torch threads           {torch.get_num_threads()}  (device {device})")
    print(f"samples                 {args.samples} images of {size[0]}x{size[1]}")
    print(f"latency per request     {args.latency_ms:g} ms")
    print(f"requests in (b)         {results['requests_overlapped']}")
    print(f"worker                  {worker_config.model_dump(exclude={'engine', 'lease_s'})}")
    print(f"(a) sequential          {a:7.2f} img/s  ({runs['sequential'].seconds:.1f} s)")
    print(f"(b) pipelined           {b:7.2f} img/s  ({runs['overlapped'].seconds:.1f} s)")
    print(
        f"(c) inference alone     {c:7.2f} img/s  (predict only; {before.ips:.2f} before (a), "
        f"{after.ips:.2f} after (b))"
    )
    print(
        f"    encode_label        {inference.encode_seconds / inference.samples * 1000:7.2f} "
        "ms/img (not in (c))"
    )
    for engine, run in runs.items():
        print(
            f"    predict in {engine:<10}  {run.predict_seconds / run.samples * 1000:7.0f} ms/img, "
            f"inference busy {run.predict_seconds / run.seconds:4.0%} of the run"
        )
    print(f"    predict alone         {inference.seconds / inference.samples * 1000:7.0f} ms/img")
    print(
        "other processes         busy cores on average: "
        + ", ".join(f"{phase} {cores:.2f}" for phase, cores in other.items())
        + f"  (of {os.cpu_count()})"
    )
    print(f"b/a                     {b / a:7.2f}  (target >= 3)")
    print(f"b/c                     {b / c:7.2f}  (target >= 0.85)")
    print(f"peak RSS                {peak_rss_mb():7.1f} MB")
    return {
        "sequential_ips": round(a, 3),
        "pipelined_ips": round(b, 3),
        "inference_ips": round(c, 3),
        "b_over_a": round(b / a, 3),
        "b_over_c": round(b / c, 3),
        "extra": {
            "encode_ms": round(inference.encode_seconds / inference.samples * 1000, 3),
            "torch_threads": torch.get_num_threads(),
            "device": str(pipeline.backend.device),
            "image_size": list(size),
            "worker": worker_config.model_dump(),
            "inference_ips_passes": [round(before.ips, 3), round(after.ips, 3)],
            "other_processes_cores": {phase: round(cores, 2) for phase, cores in other.items()},
            "predict_ms": {
                "alone": round(inference.seconds / inference.samples * 1000, 1),
                **{
                    engine: round(run.predict_seconds / run.samples * 1000, 1)
                    for engine, run in runs.items()
                },
            },
        },
    }


# --- memory ------------------------------------------------------------------------------------


def _serve(count: int, size: tuple[int, int], db_path: str, conn: Connection) -> None:
    """Child process: an emulator with ``count`` samples; sends its URL, serves until told."""
    with Emulator(KEY, db_path=db_path) as emulator:
        emulator.create_dataset(f"{emulator.username}/memory", categories=list(CATEGORIES))
        urls = [emulator.add_asset(png_bytes(*size, seed=i), f"m{i}.png") for i in range(16)]
        batch = 1000
        for start in range(0, count, batch):
            emulator.add_samples(
                f"{emulator.username}/memory",
                (
                    {"name": f"image_{i:06d}.png", "attributes": {"image": {"url": urls[i % 16]}}}
                    for i in range(start, min(count, start + batch))
                ),
            )
        conn.send(emulator.url)
        while not conn.poll(1.0):
            emulator.clear_requests()  # the log is kept in memory; nobody reads it here
        conn.recv()


@contextmanager
def child_emulator(count: int, size: tuple[int, int], db_path: Path) -> Iterator[str]:
    parent, child = mp.Pipe()
    server = mp.get_context("spawn").Process(
        target=_serve, args=(count, size, str(db_path), child), daemon=True
    )
    server.start()
    try:
        yield parent.recv()
    finally:
        parent.send("stop")
        server.join(timeout=30)
        if server.is_alive():
            server.terminate()


def memory(
    args: argparse.Namespace, pipeline: Pipeline, pipeline_settings: PipelineSettings
) -> dict[str, Any]:
    count, step = args.memory_samples, args.memory_every or max(1, args.memory_samples // 10)
    size = parse_size(args.memory_size)
    checkpoints: list[dict[str, float]] = []
    started = time.perf_counter()

    def checkpoint(done: int) -> None:
        row = {
            "samples": done,
            "rss_mb": round(rss_mb(), 1),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "seconds": round(time.perf_counter() - started, 1),
        }
        checkpoints.append(row)
        print(
            f"  {done:>7,} samples  RSS {row['rss_mb']:7.1f} MB  peak {row['peak_rss_mb']:7.1f} MB"
            f"  {row['seconds']:7.1f} s",
            flush=True,
        )

    print(f"\nmemory: pipelined run over {count:,} samples of {size[0]}x{size[1]}, no latency")
    worker_config = worker_settings(args)
    with (
        tempfile.TemporaryDirectory(prefix="throughput-memory-") as tmp,
        child_emulator(count, size, Path(tmp) / "emulator.sqlite") as url,
    ):
        settings = make_settings(url, pipeline_settings, args.device, worker_config)
        print(f"  {'start':>7}  RSS {rss_mb():7.1f} MB  peak {peak_rss_mb():7.1f} MB")
        started = time.perf_counter()
        progress = CountingProgress(step, checkpoint)
        run = run_worker(url, "jane/memory", settings, pipeline, Path(tmp), progress)
    first, last = checkpoints[0], checkpoints[-1]
    growth = last["rss_mb"] - first["rss_mb"]
    print(
        f"  RSS from {first['samples']:,} to {last['samples']:,} samples: {growth:+.1f} MB; "
        f"peak {last['peak_rss_mb']:.1f} MB; {run.ips:.2f} img/s"
    )
    return {
        "samples": count,
        "image_size": list(size),
        "rss_growth_mb": round(growth, 1),
        "peak_rss_mb": last["peak_rss_mb"],
        "ips": round(run.ips, 3),
        "checkpoints": checkpoints,
    }


# --- main --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--latency-ms", type=float, default=150.0)
    parser.add_argument("--size", default="64x48", help="WxH of the throughput images")
    parser.add_argument("--fetch-workers", type=int, default=WorkerConfig().fetch_workers)
    parser.add_argument("--prefetch", type=int, default=WorkerConfig().prefetch)
    parser.add_argument("--batch-size", type=int, default=WorkerConfig().batch_size)
    parser.add_argument("--deliver-workers", type=int, default=WorkerConfig().deliver_workers)
    parser.add_argument("--deliver-queue", type=int, default=WorkerConfig().deliver_queue)
    parser.add_argument("--max-detections", type=int, default=3, help="bounds SAM's batch")
    parser.add_argument("--memory-samples", type=int, default=1000, help="0: skip")
    parser.add_argument("--memory-size", default="16x16")
    parser.add_argument("--memory-every", type=int, default=0, help="default: every 10%%")
    parser.add_argument("--torch-threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--models", type=Path, default=None, help="default: tiny random models")
    parser.add_argument("--full-size", action="store_true", help="random real-size models")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    # Thresholds at 0: random weights find something in every image, so every stage has work
    # and every label is non-empty; max_detections caps the SAM batch.
    pipeline_settings = PipelineSettings(
        box_threshold=0.0, text_threshold=0.0, min_area=0, max_detections=args.max_detections
    )
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    pipeline = load_pipeline(args, pipeline_settings)
    result = throughput(args, pipeline, pipeline_settings)
    extra = result.pop("extra")
    memory_result = memory(args, pipeline, pipeline_settings) if args.memory_samples else None
    line: dict[str, Any] = {
        **result,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "latency_ms": args.latency_ms,
        "samples": args.samples,
        **extra,
    }
    if memory_result is not None:
        line["memory"] = memory_result
    print(json.dumps(line))


if __name__ == "__main__":
    main()
