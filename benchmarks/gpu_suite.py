"""Everything we want to know from a GPU, in one command that prints one JSON line.

``python benchmarks/gpu_suite.py`` on a CUDA box (one H100: under 8 minutes with the default
``--budget-s 450``), no network needed: every model is built in place with random weights at
its real architecture (same compute as the released weights; the masks mean nothing):

- ``throughput``: images per second of ``Pipeline.predict_batch`` per back-end (grounded_sam:
  SAM ViT-B, Grounding DINO tiny, CLIPSeg rd64, as ``benchmarks/pipeline_stages.py`` builds
  them; sam3: ``Sam3Model(Sam3Config())``) at batch 1, 4 and 8, bf16 and fp32, and for
  grounded_sam ``models.compile`` off and on (sam3 has no compile setting); per configuration
  the seconds per stage per image (one extra batch, timed with the stage clock) and the GPU
  memory peak. 1280x720 street-like images, the 133 COCO-panoptic categories.
- ``host_overhead``: host work per 1920x1080 image with 133 categories on this box's CPU
  (``benchmarks/host_overhead.py``: stand-in models, the pipeline's own work only; ``total_s``
  is the device path's, the tensor forms a GPU runs, ``cpu_path`` what a CPU device runs).
- ``seed_baseline``: the seed's loop on the same grounded_sam models, one image at a time in
  fp32: prelabel's detection and SAM box masks, then the reference port's stuff branch
  (``tests/reference/``); ``best_over_seed`` is the best grounded_sam images per second above
  over this.
- ``dtype_boxes``: Grounding DINO boxes in bf16 against fp32 (``benchmarks/dtype_boxes.py``).
- ``end_to_end``: ``prelabel run``'s worker against the emulator with 150 ms per request
  (``benchmarks/throughput.py``) with the full-size grounded_sam models.

Each section and each configuration first checks the time left of ``--budget-s``; one that does
not fit is recorded as skipped, and an alarm at the budget stops whatever runs then, so the JSON
line is always printed. Progress goes to stderr, the JSON line to stdout.

``--smoke`` runs every section with the tiny random models on small images in seconds, on the
CPU if that is all there is (``tests/test_gpu_suite.py`` runs it, so the suite does not rot).
"""

from __future__ import annotations

import _weakrefset
import argparse
import contextlib
import importlib.util
import io
import json
import platform
import signal
import statistics
import sys
import tempfile
import time
import traceback
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from prelabel.backends import backend_spec  # noqa: E402
from prelabel.backends.grounded_sam.backend import GroundedSam  # noqa: E402
from prelabel.backends.grounded_sam.loading import load_models  # noqa: E402
from prelabel.backends.loading import resolve_device  # noqa: E402
from prelabel.config import ModelSettings, PipelineSettings  # noqa: E402
from prelabel.pipeline.pipeline import Pipeline  # noqa: E402
from prelabel.taxonomy import Taxonomy  # noqa: E402
from prelabel.weights.tiny import write_tiny_models  # noqa: E402
from tests.reference.parity import run_port, thing_pixels  # noqa: E402

HERE = Path(__file__).resolve().parent


class BudgetExceeded(Exception):
    """Raised by the alarm when ``--budget-s`` runs out."""


@dataclass(frozen=True)
class Plan:
    """What a run measures: the full suite or the smoke run."""

    size: tuple[int, int]
    categories: int
    batches: tuple[int, ...]
    dtypes: tuple[str, ...]
    compile_modes: tuple[bool, ...]
    host_size: tuple[int, int]
    host_categories: int
    baseline_images: int
    e2e_args: tuple[str, ...]
    dtype_box_args: tuple[str, ...]
    #: Images timed per configuration (after a warm-up batch); 0: one batch, no warm-up.
    timed_images: int

    def rounds(self, batch: int) -> int:
        """Batches timed at ``batch`` images each (0: the smoke run's single batch)."""
        return max(1, self.timed_images // batch) if self.timed_images else 0


FULL = Plan(
    size=(1280, 720),
    categories=133,
    batches=(1, 4, 8),
    dtypes=("bfloat16", "float32"),
    compile_modes=(False, True),
    host_size=(1920, 1080),
    host_categories=133,
    baseline_images=2,
    e2e_args=("--samples", "24", "--size", "1280x720", "--batch-size", "4"),
    dtype_box_args=("--images", "4", "--size", "1280x720"),
    timed_images=16,
)
SMOKE = Plan(
    size=(96, 64),
    categories=13,
    batches=(1, 2),
    dtypes=("float32",),
    compile_modes=(False,),
    host_size=(160, 120),
    host_categories=13,
    baseline_images=1,
    e2e_args=("--samples", "2", "--size", "64x48"),
    dtype_box_args=("--images", "1", "--size", "96x64"),
    timed_images=0,
)

#: Rough seconds a full configuration takes on an H100, to skip what cannot finish in time.
_ESTIMATE_S = {"config": 20.0, "compiled": 90.0, "sam3_build": 60.0, "section": 30.0}


@dataclass
class Budget:
    """Seconds left of ``--budget-s``; an alarm raises :class:`BudgetExceeded` when it ends."""

    seconds: float
    started: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    def arm(self) -> None:
        def expire(signum: int, frame: FrameType | None) -> None:
            if _in_finalizer(frame):
                # Raised there, the exception would be swallowed ("Exception ignored in") and
                # the finalizer left half done: ask again once it has finished.
                signal.setitimer(signal.ITIMER_REAL, _RETRY_S)
                return
            raise BudgetExceeded(f"budget of {self.seconds:.0f} s used up")

        signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, max(self.left(), 0.001))

    def disarm(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)


#: Seconds until the alarm asks again when it came while a finalizer ran.
_RETRY_S = 0.05
#: Modules whose code the garbage collector runs in the middle of any other code: weak
#: references' callbacks (``weakref.finalize``, a ``WeakSet``'s or a weak dictionary's removal).
_WEAKREF_FILES = frozenset({weakref.__file__, _weakrefset.__file__})


def _in_finalizer(frame: FrameType | None) -> bool:
    """Whether ``frame`` or a caller of it is a ``__del__`` or code of the weakref modules
    (where their callbacks run): an exception raised there never reaches the suite. Plain
    weakref calls are caught too; they only put the alarm off by :data:`_RETRY_S`."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__" or code.co_filename in _WEAKREF_FILES:
            return True
        frame = frame.f_back
    return False


def log(message: str) -> None:
    print(f"[gpu_suite] {message}", file=sys.stderr, flush=True)


def load_benchmark(name: str) -> ModuleType:
    """One of the sibling benchmark scripts, which are no package."""
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # their dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_section(
    results: dict[str, Any], name: str, budget: Budget, need_s: float, body: Callable[[], Any]
) -> None:
    """``results[name] = body()``, or why not: skipped for time, or the error's last line."""
    if budget.left() < need_s:
        results[name] = {"skipped": f"{budget.left():.0f} s left, needs about {need_s:.0f} s"}
        log(f"{name}: skipped, out of time")
        return
    log(f"{name} ...")
    start = time.monotonic()
    try:
        results[name] = body()
    except BudgetExceeded as exc:
        results[name] = {"stopped": str(exc)}
    except Exception as exc:  # one broken section must not lose the others' figures
        traceback.print_exc(file=sys.stderr)
        results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    log(f"{name}: {time.monotonic() - start:.1f} s")


def captured_json(main: Callable[[list[str]], Any], argv: list[str]) -> dict[str, Any]:
    """Run a benchmark's ``main``, its printout to stderr, and return its last JSON line."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(argv)
    text = out.getvalue()
    sys.stderr.write(text)
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError("the benchmark printed no JSON line")
    parsed: dict[str, Any] = json.loads(lines[-1])
    return parsed


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def gpu_peak(device: torch.device, into: dict[str, Any]) -> Iterator[None]:
    """Record the CUDA memory peak (MiB) of the block under ``into["gpu_peak_mib"]``."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    yield
    if device.type == "cuda":
        into["gpu_peak_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


# --- throughput ---------------------------------------------------------------------------------


def measure_batches(
    pipeline: Pipeline, taxonomy: Taxonomy, images: list[Any], plan: Plan, budget: Budget
) -> list[dict[str, Any]]:
    """Images per second at each batch size (warm-up batch first), stage seconds per image."""
    device = pipeline.backend.device
    rows = []
    for batch in plan.batches:
        row: dict[str, Any] = {"batch": batch}
        if budget.left() < _ESTIMATE_S["config"] / 2:
            rows.append({**row, "skipped": "out of time"})
            continue
        with gpu_peak(device, row):
            work = images[:batch]
            timings: dict[str, float] = {}
            rounds = plan.rounds(batch)
            if rounds:  # a warm-up batch (and compilation), then batches timed as a whole
                pipeline.predict_batch(work, taxonomy)
                sync(device)
                start = time.perf_counter()
                for _ in range(rounds):
                    pipeline.predict_batch(work, taxonomy)
                sync(device)
                elapsed = time.perf_counter() - start
                pipeline.predict_batch(work, taxonomy, timings=timings)
            else:  # smoke: one batch, timed by stage too
                start = time.perf_counter()
                pipeline.predict_batch(work, taxonomy, timings=timings)
                elapsed, rounds = time.perf_counter() - start, 1
        row["images_per_s"] = round(rounds * batch / elapsed, 3)
        row["stage_s_per_image"] = {k: round(v / batch, 4) for k, v in timings.items()}
        rows.append(row)
        log(f"  batch {batch}: {row['images_per_s']} images/s")
    return rows


def grounded_throughput(
    models_dir: Path,
    device: str,
    taxonomy_of: Callable[[str], Taxonomy],
    images: list[Any],
    plan: Plan,
    settings: PipelineSettings,
    budget: Budget,
    *,
    compiled: bool,
) -> list[dict[str, Any]]:
    """grounded_sam over every dtype, with ``models.compile`` as ``compiled`` (nothing when the
    plan leaves that mode out)."""
    configs: list[dict[str, Any]] = []
    if compiled not in plan.compile_modes:
        return configs
    for dtype in plan.dtypes:
        config: dict[str, Any] = {"dtype": dtype, "compile": compiled}
        if budget.left() < _ESTIMATE_S["compiled" if compiled else "config"]:
            configs.append({**config, "skipped": "out of time"})
            continue
        log(f"grounded_sam {dtype} compile={compiled}")
        models = load_models(
            ModelSettings(device=device, dtype=dtype, compile=compiled), models_dir
        )
        pipeline = Pipeline(GroundedSam(models), settings)
        config["batches"] = measure_batches(
            pipeline, taxonomy_of("grounded_sam"), images, plan, budget
        )
        configs.append(config)
        del pipeline, models
    return configs


def sam3_throughput(
    stages: ModuleType,
    models_dir: Path,
    device: str,
    smoke: bool,
    taxonomy_of: Callable[[str], Taxonomy],
    images: list[Any],
    plan: Plan,
    budget: Budget,
) -> list[dict[str, Any]]:
    """sam3 over every dtype (built in memory at full size, or the tiny model for a smoke run)."""
    from prelabel.backends import load_backend
    from prelabel.config import Settings

    configs = []
    for dtype in plan.dtypes:
        config: dict[str, Any] = {"dtype": dtype, "compile": "n/a"}
        if budget.left() < _ESTIMATE_S["sam3_build"]:
            configs.append({**config, "skipped": "out of time"})
            continue
        log(f"sam3 {dtype}")
        settings = Settings(
            models=ModelSettings(backend="sam3", device=device, dtype=dtype),
            pipeline=PipelineSettings(min_area=0),
        )
        if smoke:
            backend = load_backend(settings, models_dir)
        else:
            backend = stages.full_size_sam3(settings.models)
        pipeline = Pipeline(backend, settings.pipeline)
        config["batches"] = measure_batches(pipeline, taxonomy_of("sam3"), images, plan, budget)
        configs.append(config)
        del pipeline, backend
    return configs


# --- baselines and the other benchmarks ---------------------------------------------------------


def seed_baseline(
    models_dir: Path,
    device: str,
    taxonomy: Taxonomy,
    images: list[Any],
    plan: Plan,
    settings: PipelineSettings,
) -> dict[str, Any]:
    """The seed's loop, one image at a time in fp32: prelabel's things, the port's stuff."""
    models = load_models(ModelSettings(device=device, dtype="float32"), models_dir)
    pipeline = Pipeline(GroundedSam(models), settings)
    per_image = []
    for index, image in enumerate(images[: plan.baseline_images + 1]):
        timings: dict[str, float] = {}
        prediction = pipeline.predict(image, taxonomy, timings=timings)
        things_s = sum(timings.get(stage, 0.0) for stage in ("detect", "embed", "things"))
        things = thing_pixels(prediction)
        sync(models.device)
        start = time.perf_counter()
        run_port(pipeline, image, taxonomy, things if things.any() else None)
        sync(models.device)
        if index:  # the first image warms up
            per_image.append(things_s + time.perf_counter() - start)
    seconds = statistics.fmean(per_image)
    return {"s_per_image": round(seconds, 4), "images_per_s": round(1 / seconds, 4)}


def host_overhead(stages: ModuleType, plan: Plan) -> dict[str, Any]:
    """``benchmarks/host_overhead.py``'s figures for one image, on one CPU thread (the target's
    terms: a GPU box's many cores would hide how much the host does per image)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        case: dict[str, Any] = load_benchmark("host_overhead").measure_case(
            stages, stages.full_size_processors(), plan.host_size, plan.host_categories, 1
        )
    finally:
        torch.set_num_threads(threads)
    return case


def best_ratio(results: dict[str, Any]) -> float | None:
    """The best grounded_sam images per second over the seed baseline's."""
    baseline = results.get("seed_baseline", {}).get("images_per_s")
    throughput = results.get("throughput", {})
    configs = [*throughput.get("grounded_sam", []), *throughput.get("grounded_sam_compiled", [])]
    rates = [
        row["images_per_s"]
        for config in configs
        for row in config.get("batches", [])
        if "images_per_s" in row
    ]
    if not baseline or not rates:
        return None
    return round(max(rates) / baseline, 2)


# --- main ---------------------------------------------------------------------------------------


def environment(device: torch.device) -> dict[str, Any]:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "gpu": gpu,
        "cpu_threads": torch.get_num_threads(),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models, small images")
    parser.add_argument("--budget-s", type=float, default=450.0, help="stop and print by then")
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    parser.add_argument("--skip", nargs="*", default=[], help="sections to leave out")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = SMOKE if args.smoke else FULL
    budget = Budget(args.budget_s)
    device = resolve_device(args.device)
    results: dict[str, Any] = {"smoke": args.smoke, "budget_s": args.budget_s}
    results["environment"] = environment(device)
    stages = load_benchmark("pipeline_stages")
    settings = stages.BENCH_SETTINGS

    def taxonomy_of(backend: str) -> Taxonomy:
        reader = backend_spec(backend).option_reader()
        taxonomy: Taxonomy = stages.coco_taxonomy(plan.categories, reader, settings)
        return taxonomy

    images = [stages.synthetic_image(plan.size, seed=i) for i in range(max(plan.batches))]
    wanted = [
        s
        for s in ("throughput", "host_overhead", "seed_baseline", "dtype_boxes", "end_to_end")
        if s not in args.skip
    ]
    budget.arm()
    try:
        with tempfile.TemporaryDirectory(prefix="prelabel-gpu-suite-") as tmp:
            log("building models ...")
            if args.smoke:
                models_dir = write_tiny_models(Path(tmp), seed=0)
            else:
                models_dir = stages.write_full_size_models(Path(tmp), seed=0)
            sections: dict[str, tuple[float, Callable[[], Any]]] = {
                "throughput": (
                    _ESTIMATE_S["config"],
                    lambda: {
                        "grounded_sam": grounded_throughput(
                            models_dir,
                            str(device),
                            taxonomy_of,
                            images,
                            plan,
                            settings,
                            budget,
                            compiled=False,
                        ),
                        "sam3": sam3_throughput(
                            stages,
                            models_dir,
                            str(device),
                            args.smoke,
                            taxonomy_of,
                            images,
                            plan,
                            budget,
                        ),
                        # Compiling is the costly part: last, so it never crowds out sam3.
                        "grounded_sam_compiled": grounded_throughput(
                            models_dir,
                            str(device),
                            taxonomy_of,
                            images,
                            plan,
                            settings,
                            budget,
                            compiled=True,
                        ),
                        "size": f"{plan.size[0]}x{plan.size[1]}",
                        "categories": plan.categories,
                    },
                ),
                "host_overhead": (
                    _ESTIMATE_S["section"],
                    lambda: host_overhead(stages, plan),
                ),
                "seed_baseline": (
                    _ESTIMATE_S["section"],
                    lambda: seed_baseline(
                        models_dir,
                        str(device),
                        taxonomy_of("grounded_sam"),
                        images,
                        plan,
                        settings,
                    ),
                ),
                "dtype_boxes": (
                    _ESTIMATE_S["section"],
                    lambda: captured_json(
                        load_benchmark("dtype_boxes").main,
                        ["--models", str(models_dir), *plan.dtype_box_args],
                    ),
                ),
                "end_to_end": (
                    _ESTIMATE_S["section"],
                    lambda: captured_json(
                        load_benchmark("throughput").main,
                        [
                            "--models",
                            str(models_dir),
                            "--device",
                            str(device),
                            "--memory-samples",
                            "0",
                            "--max-detections",
                            "20",
                            *plan.e2e_args,
                        ],
                    ),
                ),
            }
            # The cheap sections first: the throughput matrix takes whatever time is left.
            for name in (
                "host_overhead",
                "seed_baseline",
                "dtype_boxes",
                "end_to_end",
                "throughput",
            ):
                if name in wanted:
                    need, body = sections[name]
                    run_section(results, name, budget, need, body)
    except BudgetExceeded as exc:
        results["stopped"] = str(exc)
    finally:
        budget.disarm()
        results["best_over_seed"] = best_ratio(results)
        results["elapsed_s"] = round(budget.seconds - budget.left(), 1)
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
