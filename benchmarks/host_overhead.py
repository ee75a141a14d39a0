"""Seconds per image the grounded_sam pipeline spends around its models, split into host work and
tensor work, per stage, against the seed's own loop (the reference port) in the same run.

On a GPU the model forwards take milliseconds; whatever the pipeline does around them decides
whether the GPU waits. This script replaces the three models with deterministic stand-ins whose
forwards cost next to nothing, and whose answers make the work realistic: the detector gives 20
boxes, CLIPSeg's maps give 10 stuff regions with blurred edges (two per category with 5 stuff
categories, one each for 10 of the 53 with 133), SAM answers a box with its rectangle and a
point prompt with the box around its points. The processors are the real checkpoints' (SAM
1024, Grounding DINO 800/1333, CLIPSeg 352). The stuff method is the seed's, with its default
knobs (background 0.1, erosion 20, 1,000 points for the largest category).

Per stage (``detect``, ``embed``, ``things``, ``coarse``, ``stuff``, ``merge``, and ``other``:
the working image and what lies between stages) the wall time is split three ways:

- **model**: inside a stand-in's forward (next to nothing; a real model's cost is the GPU suite's);
- **tensor**: inside torch functions outside the models (upscaling, argmaxes, erosion), timed by
  a ``TorchFunctionMode``; on a GPU this is device work, measured by ``benchmarks/gpu_suite.py``;
- **host**: the rest: numpy, PIL, processors, Python, and copies between device and host memory
  (``.cpu()``, ``.numpy()``, ``from_numpy`` ... are counted here, not as tensor work).

Targets (issue 23), each measured on the code path it is about. Some steps have two exact
forms (``prelabel/backends/grounded_sam/fastest_path.py``): tensor operations, which a GPU
device runs, and Pillow/numpy, which a CPU device runs because they are faster there.
Each image is therefore predicted twice (and the two predictions must be equal,
``same_output``):

- **A, host work** at most 100 ms per 1920x1080 image with 133 categories on one CPU thread,
  so a GPU at 10 images per second never waits on its host. That is about a GPU's host, so it
  is measured on the **device path**: ``fastest_path.tensor_paths()`` forced, the tensor forms
  running on this CPU and counted as tensor work. The per-stage table's first columns, and
  ``per_stage_s``, ``total_s`` and the verdict in the JSON line, are this path's.
- **B, the stuff branch** (``embed + coarse + stuff``: SAM's preprocessing is in the port too)
  at least 5x faster than the reference port on the same image, things and models. That is a
  CPU speed target, so it is measured on the **CPU path**, what a CPU device really runs: the
  table's last columns, ``cpu_path``, ``stuff_branch_s`` and ``port_over_ours`` (the mean's
  ratio; ``device_path_stuff_branch_s`` gives the device path's branch for comparison). On a
  shared machine single images swing by tens of percent, the port's most (its large
  allocations), so ``port_over_ours_per_image`` also gives the ratio image by image, each the
  port and ours on the same image a moment apart: its median, lowest and highest. Give
  ``--images`` 6 or more for a median worth reading.

Run: ``python benchmarks/host_overhead.py [--images 2] [--sizes 1280x720 1920x1080]
[--categories 13 133] [--threads 1]``. About 2 minutes on the 2-core CPU. The last line is one
JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch.overrides import TorchFunctionMode

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from prelabel.backends.grounded_sam.backend import GroundedSam  # noqa: E402
from prelabel.backends.grounded_sam.fastest_path import tensor_paths  # noqa: E402
from prelabel.backends.grounded_sam.loading import LoadedModels  # noqa: E402
from prelabel.backends.grounded_sam.spec import SPEC  # noqa: E402
from prelabel.config import PipelineSettings  # noqa: E402
from prelabel.panoptic import PanopticPrediction  # noqa: E402
from prelabel.pipeline.clock import StageClock, Timings  # noqa: E402
from prelabel.pipeline.pipeline import Pipeline  # noqa: E402
from prelabel.taxonomy import Taxonomy  # noqa: E402
from tests.reference.parity import run_port, thing_pixels  # noqa: E402

STAGES = ("detect", "embed", "things", "coarse", "stuff", "merge", "other")
STUFF_BRANCH = ("embed", "coarse", "stuff")
HOST_TARGET_S = 0.100
SPEEDUP_TARGET = 5.0
BOXES = 20
REGIONS = 10
MAP_SIDE = 352
SETTINGS = PipelineSettings(max_detections=BOXES, min_area=0)
#: Which code path each figure is of (the JSON line says it too).
PATHS = {
    "per_stage_s, total_s, host_s_1080p_133 (target A)": (
        "device path: fastest_path.tensor_paths() forced, the tensor forms a GPU device runs"
    ),
    "cpu_path, stuff_branch_s, port_over_ours (target B)": (
        "CPU path: what a CPU device runs (Pillow's resize, scipy's erosion)"
    ),
}


def load_pipeline_stages() -> ModuleType:
    """``benchmarks/pipeline_stages.py`` (processors, taxonomy, images), which is no package."""
    path = Path(__file__).resolve().parent / "pipeline_stages.py"
    spec = importlib.util.spec_from_file_location("pipeline_stages", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# --- time accounting ---------------------------------------------------------------------------

#: Torch calls that move data between host and device memory, or make tensors of host data:
#: host work, not tensor work.
_HOST_CALLS = {
    torch.Tensor.cpu,
    torch.Tensor.numpy,
    torch.Tensor.tolist,
    torch.Tensor.item,
    torch.from_numpy,
    torch.tensor,
    torch.as_tensor,
}


class Ledger(TorchFunctionMode):
    """Seconds of torch calls (tensor work) and of stand-in forwards (model), per open stage.

    Torch functions called from inside a timed torch function are not seen again (the mode is
    off while it handles a call), so nothing is counted twice.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stage = "other"
        self.tensor: dict[str, float] = {}
        self.model: dict[str, float] = {}
        self._in_model = 0

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if self._in_model or func in _HOST_CALLS:
            return func(*args, **kwargs)
        start = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - start
            self.tensor[self.stage] = self.tensor.get(self.stage, 0.0) + elapsed

    @contextmanager
    def in_model(self) -> Iterator[None]:
        self._in_model += 1
        start = time.perf_counter()
        try:
            yield
        finally:
            self._in_model -= 1
            elapsed = time.perf_counter() - start
            self.model[self.stage] = self.model.get(self.stage, 0.0) + elapsed

    def reset(self) -> None:
        self.tensor.clear()
        self.model.clear()


class _LedgerClock(StageClock):
    """The pipeline's stage clock, telling the ledger which stage is open."""

    def __init__(self, timings: Timings | None, ledger: Ledger) -> None:
        super().__init__(timings)
        self.ledger = ledger

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        outer, self.ledger.stage = self.ledger.stage, stage
        try:
            with super().__call__(stage):
                yield
        finally:
            self.ledger.stage = outer


class LedgerPipeline(Pipeline):
    def __init__(self, backend: GroundedSam, settings: PipelineSettings, ledger: Ledger) -> None:
        super().__init__(backend, settings)
        self.ledger = ledger

    def clock(self, timings: Timings | None) -> StageClock:
        return _LedgerClock(timings, self.ledger)


# --- stand-ins ---------------------------------------------------------------------------------


class _StandIn(torch.nn.Module):
    def __init__(self, ledger: Ledger) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # the pipeline reads the dtype here
        self.ledger = ledger


class TwentyBoxes(_StandIn):
    """Grounding DINO: 20 fixed boxes, each confident on one prompt token (spread over all
    prompts), 10 more queries low everywhere."""

    def __init__(self, ledger: Ledger, tokenizer: Any) -> None:
        super().__init__(ledger)
        self.config = SimpleNamespace(max_text_len=256)
        self.skip = {*tokenizer.all_special_ids, tokenizer.convert_tokens_to_ids(".")}
        rng = np.random.default_rng(0)
        centres = rng.uniform(0.15, 0.85, (BOXES, 2))
        sizes = rng.uniform(0.05, 0.25, (BOXES, 2))
        self.boxes = torch.from_numpy(np.concatenate([centres, sizes], axis=1)).float()

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, **_: Any) -> Any:
        with self.ledger.in_model():
            batch = pixel_values.shape[0]
            logits = torch.full((batch, BOXES + 10, 256), -10.0)
            words = [i for i, t in enumerate(input_ids[0].tolist()) if t not in self.skip]
            for query in range(BOXES):
                logits[:, query, words[(query * 7) % len(words)]] = 5.0
            boxes = torch.cat([self.boxes, torch.full((10, 4), 0.5)]).expand(batch, -1, -1)
            return SimpleNamespace(logits=logits, pred_boxes=boxes)


class RectangleSam(_StandIn):
    """SAM: a box prompt answers its rectangle, a point prompt the box around its positive
    points (padding, label -10, ignored), at the 256 x 256 low resolution; logits +/-8."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__(ledger)
        self.config = SimpleNamespace(vision_config=SimpleNamespace(image_size=1024))

    def get_image_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        with self.ledger.in_model():
            return torch.zeros(pixel_values.shape[0], 1, 1, 1)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        input_boxes: torch.Tensor | None = None,
        input_points: torch.Tensor | None = None,
        input_labels: torch.Tensor | None = None,
        multimask_output: bool = True,
        **_: Any,
    ) -> Any:
        with self.ledger.in_model():
            if input_boxes is not None:
                corners = input_boxes[0].float() / 4
            else:
                assert input_points is not None and input_labels is not None
                points = input_points[0].float() / 4
                real = (input_labels[0] == 1)[..., None]
                low = torch.where(real, points, torch.inf).amin(dim=1)
                high = torch.where(real, points, -torch.inf).amax(dim=1)
                corners = torch.cat([low, high], dim=1)
            grid = torch.arange(256, dtype=torch.float32) + 0.5
            inside_x = (grid >= corners[:, None, 0]) & (grid <= corners[:, None, 2])
            inside_y = (grid >= corners[:, None, 1]) & (grid <= corners[:, None, 3])
            masks = torch.where(inside_y[:, :, None] & inside_x[:, None, :], 8.0, -8.0)
            copies = 3 if multimask_output else 1
            pred = masks[None, :, None].expand(1, len(masks), copies, 256, 256)
            iou = torch.full((1, len(masks), copies), 0.9)
            return SimpleNamespace(pred_masks=pred, iou_scores=iou)


def region_maps(rows: int) -> torch.Tensor:
    """``(rows, 352, 352)`` logits: 10 blocks of a 2 x 5 grid, block ``k`` high for row
    ``k % rows`` (only the first 10 rows have one), blurred like CLIPSeg's maps."""
    maps = np.full((rows, MAP_SIDE, MAP_SIDE), -5.0, dtype=np.float32)
    height, width = MAP_SIDE // 2, MAP_SIDE // 5
    for block in range(REGIONS):
        top, left = (block // 5) * height, (block % 5) * width
        maps[block % rows, top + 8 : top + height - 8, left + 8 : left + width - 8] = 3.0
    for row in range(rows):
        maps[row] = ndimage.gaussian_filter(maps[row], sigma=6) - 0.01 * row
    return torch.from_numpy(maps)


class TenRegions(_StandIn):
    """CLIPSeg, both ways of calling it (the shared-vision pieces prelabel calls, and the
    forward the port calls): phrase ``i`` gets row ``i`` of :func:`region_maps`."""

    extract_layers = (0,)

    def __init__(self, ledger: Ledger, phrases: int) -> None:
        super().__init__(ledger)
        self.maps = region_maps(phrases)
        self.clip = SimpleNamespace(get_image_features=self._image_features)
        # CLIP's text positions, which the pipeline's prompt check reads as the real model's.
        self.config = SimpleNamespace(text_config=SimpleNamespace(max_position_embeddings=77))

    def _image_features(self, pixel_values: torch.Tensor, **_: Any) -> Any:
        with self.ledger.in_model():
            return SimpleNamespace(hidden_states=[None, torch.zeros(1, 1, 1)])

    def get_conditional_embeddings(self, batch_size: int, **_: Any) -> torch.Tensor:
        with self.ledger.in_model():
            return torch.arange(batch_size)

    def decoder(self, activations: list[torch.Tensor], rows: torch.Tensor) -> Any:
        with self.ledger.in_model():
            return SimpleNamespace(logits=self.maps[rows % len(self.maps)])

    def forward(self, input_ids: torch.Tensor, **_: Any) -> Any:
        with self.ledger.in_model():
            return SimpleNamespace(logits=self.maps[torch.arange(len(input_ids)) % len(self.maps)])


def standin_models(ledger: Ledger, processors: dict[str, Any], taxonomy: Taxonomy) -> LoadedModels:
    phrases = sum(len(p.phrases) for p in taxonomy.stuff)
    return LoadedModels(
        grounding_dino=TwentyBoxes(ledger, processors["grounding_dino"].tokenizer),
        grounding_dino_processor=processors["grounding_dino"],
        sam=RectangleSam(ledger),  # type: ignore[arg-type]
        sam_processor=processors["sam"],
        clipseg=TenRegions(ledger, max(phrases, 1)),  # type: ignore[arg-type]
        clipseg_processor=processors["clipseg"],
        device=torch.device("cpu"),
        dtypes=dict.fromkeys(("grounding_dino", "sam", "clipseg"), torch.float32),
        is_tiny=False,
    )


# --- measurement -------------------------------------------------------------------------------


@dataclass
class Split:
    """Seconds per image for one stage: wall, model, tensor; host is the rest."""

    wall: list[float] = field(default_factory=list)
    model: list[float] = field(default_factory=list)
    tensor: list[float] = field(default_factory=list)

    def add(self, wall: float, model: float, tensor: float) -> None:
        self.wall.append(wall)
        self.model.append(model)
        self.tensor.append(tensor)

    def means(self) -> dict[str, float]:
        wall, model, tensor = (statistics.fmean(v) for v in (self.wall, self.model, self.tensor))
        return {
            "wall": round(wall, 4),
            "model": round(model, 4),
            "tensor": round(tensor, 4),
            "host": round(max(wall - model - tensor, 0.0), 4),
        }


def _run_ours(
    pipeline: LedgerPipeline, image: Any, taxonomy: Taxonomy, splits: dict[str, Split] | None
) -> PanopticPrediction:
    """One prediction, its stages' wall, model and tensor seconds added to ``splits`` (None:
    the warm-up, not counted)."""
    ledger = pipeline.ledger
    timings: dict[str, float] = {}
    ledger.reset()
    with ledger:
        start = time.perf_counter()
        prediction = pipeline.predict(image, taxonomy, timings=timings)
        timings["other"] = time.perf_counter() - start - sum(timings.values())
    if splits is not None:
        for stage in STAGES:
            model, tensor = ledger.model.get(stage, 0.0), ledger.tensor.get(stage, 0.0)
            splits[stage].add(timings.get(stage, 0.0), model, tensor)
    return prediction


def _spread(ratios: list[float]) -> dict[str, float]:
    """Median, lowest and highest of the per-image ratios. Each compares the port and ours on
    the same image a moment apart, so a slow spell of a shared machine (which moves both, the
    port's large allocations most) moves one pair, not the whole mean."""
    return {
        "median": round(statistics.median(ratios), 2),
        "min": round(min(ratios), 2),
        "max": round(max(ratios), 2),
    }


def _same(one: PanopticPrediction, other: PanopticPrediction) -> bool:
    return one.segments == other.segments and np.array_equal(one.id_map, other.id_map)


def _path_means(splits: dict[str, Split]) -> dict[str, Any]:
    per_stage = {stage: splits[stage].means() for stage in STAGES}
    total = {k: round(sum(per_stage[s][k] for s in STAGES), 4) for k in per_stage["detect"]}
    branch = round(sum(per_stage[s]["wall"] for s in STUFF_BRANCH), 4)
    return {"per_stage_s": per_stage, "total_s": total, "stuff_branch_s": branch}


def measure_case(
    stages: ModuleType, processors: dict[str, Any], size: tuple[int, int], count: int, images: int
) -> dict[str, Any]:
    """One image size and taxonomy size: prelabel's stages on both paths, and the port, per
    image. The device path (:func:`tensor_paths`, what a GPU device runs) gives the host/tensor
    split and target A; the CPU path (what a CPU device runs) gives the stuff branch's ratio to
    the port, target B. Both must give the same prediction (``same_output``)."""
    ledger = Ledger()
    taxonomy = stages.coco_taxonomy(count, SPEC.option_reader(), SETTINGS)
    models = standin_models(ledger, processors, taxonomy)
    pipeline = LedgerPipeline(GroundedSam(models), SETTINGS, ledger)
    device_path = {stage: Split() for stage in STAGES}
    cpu_path = {stage: Split() for stage in STAGES}
    port = Split()
    paired: list[float] = []  # per image: the port's seconds over ours, on the same image
    same = True
    workload: dict[str, list[int]] = {"things": [], "stuff": [], "stuff_prompted": []}
    for index in range(images + 1):  # the first is a warm-up
        image = stages.synthetic_image(size, seed=index)
        with tensor_paths():
            on_device = _run_ours(pipeline, image, taxonomy, device_path if index else None)
        prediction = _run_ours(pipeline, image, taxonomy, cpu_path if index else None)
        same = same and _same(on_device, prediction)
        things = thing_pixels(prediction)
        ledger.reset()
        with ledger:
            start = time.perf_counter()
            result = run_port(pipeline, image, taxonomy, things if things.any() else None)
            port_wall = time.perf_counter() - start
        if index:
            port.add(port_wall, ledger.model.get("other", 0.0), ledger.tensor.get("other", 0.0))
            branch_wall = sum(cpu_path[stage].wall[-1] for stage in STUFF_BRANCH)
            paired.append(port_wall / branch_wall)
            workload["things"].append(sum(s.is_thing for s in prediction.segments))
            workload["stuff"].append(sum(not s.is_thing for s in prediction.segments))
            workload["stuff_prompted"].append(sum(1 for n in result.points.values() if n > 0))
    device, cpu = _path_means(device_path), _path_means(cpu_path)
    branch = cpu["stuff_branch_s"]
    port_means = port.means()
    return {
        "size": f"{size[0]}x{size[1]}",
        "categories": count,
        "stuff_categories": len(taxonomy.stuff),
        "images": images,
        # target A's terms: the path a GPU device runs (tensor forms), timed on this CPU
        "per_stage_s": device["per_stage_s"],
        "total_s": device["total_s"],
        "device_path_stuff_branch_s": device["stuff_branch_s"],
        # target B's terms: the path a CPU device runs (Pillow, scipy)
        "cpu_path": {"per_stage_s": cpu["per_stage_s"], "total_s": cpu["total_s"]},
        "stuff_branch_s": branch,
        "port_stuff_s": port_means,
        "port_over_ours": round(port_means["wall"] / branch, 2) if branch else None,
        "port_over_ours_per_image": _spread(paired),
        "same_output": same,
        "segments_per_image": {k: statistics.fmean(v) for k, v in workload.items()},
    }


def print_case(case: dict[str, Any]) -> None:
    print()
    print(
        f"{case['size']}, {case['categories']} categories ({case['stuff_categories']} stuff), "
        f"{case['images']} image(s); seconds per image; segments per image "
        f"{case['segments_per_image']}"
    )
    print(f"{'':<8}{'device path (target A)':>36}{'CPU path (target B)':>28}")
    columns = ("wall", "host", "tensor", "model")
    print(
        f"{'stage':<8}"
        + "".join(f"{c:>9}" for c in columns)
        + "".join(f"{c:>9}" for c in columns[:3])
    )
    cpu = case["cpu_path"]
    rows = [
        (stage, split, cpu["per_stage_s"][stage]) for stage, split in case["per_stage_s"].items()
    ]
    for stage, split, on_cpu in (*rows, ("total", case["total_s"], cpu["total_s"])):
        print(
            f"{stage:<8}"
            + "".join(f"{split[c]:>9.3f}" for c in columns)
            + "".join(f"{on_cpu[c]:>9.3f}" for c in columns[:3])
        )
    port = case["port_stuff_s"]
    print(
        f"host work (device path) {case['total_s']['host']:.3f} s; stuff branch (embed + coarse "
        f"+ stuff, CPU path) {case['stuff_branch_s']:.3f} s (device path "
        f"{case['device_path_stuff_branch_s']:.3f}); reference port {port['wall']:.3f} s "
        f"(host {port['host']:.3f}, tensor {port['tensor']:.3f}): port / ours = "
        f"{case['port_over_ours']}x; same output on both paths: {case['same_output']}"
    )
    spread = case["port_over_ours_per_image"]
    print(
        f"port / ours image by image: median {spread['median']}x "
        f"(lowest {spread['min']}x, highest {spread['max']}x)"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2, help="timed images per case")
    parser.add_argument("--sizes", nargs="+", default=["1280x720", "1920x1080"])
    parser.add_argument("--categories", nargs="+", type=int, default=[13, 133])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    stages = load_pipeline_stages()
    processors = stages.full_size_processors()
    cases = []
    for text in args.sizes:
        size = stages.parse_size(text)
        for count in args.categories:
            case = measure_case(stages, processors, size, count, args.images)
            print_case(case)
            cases.append(case)
    verdicts = []
    for case in cases:
        if case["size"] == "1920x1080" and case["categories"] == 133:
            host = case["total_s"]["host"]
            verdicts.append({"host_s_1080p_133": host, "host_ok": host <= HOST_TARGET_S})
    ratios = [c["port_over_ours"] for c in cases if c["port_over_ours"] is not None]
    summary = {
        "threads": torch.get_num_threads(),
        "targets": {"host_s": HOST_TARGET_S, "port_over_ours": SPEEDUP_TARGET},
        "paths": PATHS,
        "min_port_over_ours": min(ratios) if ratios else None,
        "min_median_port_over_ours": min(
            (c["port_over_ours_per_image"]["median"] for c in cases), default=None
        ),
        "same_output": all(c["same_output"] for c in cases),
        "verdicts": verdicts,
        "cases": cases,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
