"""Seconds per pipeline stage at real model sizes, per back-end, on whatever device is present.

``--backend grounded_sam`` (the default) builds the three models at their real architectures
with random weights (SAM ViT-B,
Grounding DINO at grounding-dino-tiny size: Swin-T + BERT-base, CLIPSeg rd64-refined: ViT-B/16),
saves them in the ``--models DIR`` layout and loads them through
:func:`prelabel.backends.grounded_sam.loading.load_models`, the path real weights take.
No network, no hub.
``--models DIR`` uses an existing folder instead (real weights on a GPU box, say).

It then runs ``Pipeline.predict`` on synthetic street-like images (one warm-up, then
``--images`` timed) and prints, per stage, seconds per image and share, images per hour, the
workload (boxes and stuff point prompts decoded per image), the SAM encoder passes per image
(must be 1: checked by the segmenter's counter and by a hook on the vision encoder), peak
memory, and the merge + encode time of a 1920x1080 image against the 50 ms target. The last
line is one JSON object with the figures.

Random weights make the workload, not the masks, realistic: thresholds are set so that every
stage has work (up to 20 boxes, up to 3 regions per stuff category). On the 2-core CPU one
1280x720 image takes 30-60 s (Grounding DINO's encoder is half of it), so the default is 2 timed
images: about 3 minutes in all, model building included. Per-image min and max are printed
because other processes sharing the CPU move these figures by tens of percent.

``--stuff-method`` picks the stuff branch timed: ``seed`` (the default, one SAM prompt per prompted
stuff category, several per decoder call) or ``regions`` (one call for all regions).

``--backend sam3`` builds ``Sam3Model(Sam3Config())`` in memory instead (the released
architecture: ViT-L/14 at 1008, CLIP text encoder, DETR encoder and decoder, 200 queries;
random weights, no download, the same compute as ``facebook/sam3``; about 3.4 GB in float32, so
it is not written to disk) and times the ``sam3`` back-end (stages ``embed``, ``text``,
``things``, ``stuff``, ``merge``); ``--prompt-batch`` is K, ``--score-threshold`` the instance
gate (the pipeline default, 0.5; the number of instances kept is printed).

``--categories 10 133`` (the default) times each taxonomy size in turn: the first N categories
of configs/coco-panoptic-categories.yaml in its proportion of things to stuff (10: 6 things and
4 stuff; 133: all 80 things and 53 stuff). The image encoders run once per image whatever N
(checked, and printed as encoder passes per image); the text and detector work grows with N.
``--tiny`` uses the tiny random models of ``prelabel models tiny`` instead, in seconds, to
check the script (tests/test_sam3_backend.py runs it so).

Run: ``python benchmarks/pipeline_stages.py [--backend grounded_sam|sam3] [--categories 10 133]
[--images 2] [--size 1280x720] [--device auto] [--threads N] [--models DIR] [--tiny]
[--stuff-method seed|regions] [--prompt-batch 8]``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import (
    CLIPSegConfig,
    CLIPSegForImageSegmentation,
    CLIPSegProcessor,
    GroundingDinoConfig,
    GroundingDinoForObjectDetection,
    GroundingDinoImageProcessorPil,
    GroundingDinoProcessor,
    SamConfig,
    SamImageProcessorPil,
    SamModel,
    SamProcessor,
    ViTImageProcessorPil,
)

from prelabel.backends import backend_spec, load_backend
from prelabel.backends.grounded_sam.backend import GroundedSam
from prelabel.backends.grounded_sam.loading import MODEL_SUBDIRS, load_models
from prelabel.backends.grounded_sam.segment import BoxCrops, ImageEmbedding, PromptMasks
from prelabel.backends.grounded_sam.tiny import tiny_bert_tokenizer, tiny_clip_tokenizer
from prelabel.backends.loading import quiet_progress_bars, resolve_device
from prelabel.backends.sam3.backend import Sam3Backend
from prelabel.backends.sam3.loading import Sam3Models
from prelabel.backends.sam3.loading import resolve_dtype as resolve_sam3_dtype
from prelabel.backends.sam3.tiny import tiny_sam3_tokenizer
from prelabel.config import CategoryOptions, ModelSettings, PipelineSettings, Settings
from prelabel.formats.label import encode_label
from prelabel.panoptic import MaskCandidate, PanopticPrediction
from prelabel.pipeline.merge import merge_panoptic
from prelabel.pipeline.pipeline import Pipeline
from prelabel.taxonomy import OptionReader, Taxonomy, build_taxonomy, load_categories_file
from prelabel.weights.tiny import write_tiny_models

#: The stage clocks of each back-end, in pipeline order.
BACKEND_STAGES = {
    "grounded_sam": ("detect", "embed", "things", "coarse", "stuff", "merge"),
    "sam3": ("embed", "text", "things", "stuff", "merge"),
}
COCO_FILE = Path(__file__).resolve().parent.parent / "configs" / "coco-panoptic-categories.yaml"
TARGET_MS = 50.0
MERGE_SIZE = (1920, 1080)

#: ImageNet statistics, which all three real checkpoints normalise with.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

#: Random weights give every query a token probability near 1 and CLIPSeg maps that are
#: speckled at pixel level, so the workload is bounded by caps rather than by scores: up to 20
#: boxes, and up to 3 regions per stuff category (15 point prompts) with a region size floor
#: low enough for the speckle. A busy street scene with real weights is of the same order.
#: For the seed method (``--stuff-method seed``, the default) the erosion is 2 pixels: a random
#: CLIPSeg map is speckled and the default 20 would leave no point, hence no SAM stuff call.
BENCH_SETTINGS = PipelineSettings(
    box_threshold=0.05,
    text_threshold=0.05,
    mask_threshold=0.3,
    max_detections=20,
    min_region_fraction=0.0001,
    max_regions_per_category=3,
    shrink_kernel=2,
)

logger = logging.getLogger("pipeline_stages")


# --- full-size random models ------------------------------------------------------------------


def sam_config() -> SamConfig:
    """SAM ViT-B (the SamConfig defaults: hidden 768, 12 layers, global attention 2/5/8/11).

    The vision encoder's default init scale (1e-10) gives image embeddings of about 1e-20;
    0.02 gives activations of a trained model's order, so masks depend on the image.
    """
    config = SamConfig(vision_config={"initializer_range": 0.02})
    vision = config.vision_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.image_size) == (768, 12, 1024)
    return config


def grounding_dino_config() -> GroundingDinoConfig:
    """IDEA-Research/grounding-dino-tiny: Swin-T backbone, BERT-base text, 900 queries."""
    return GroundingDinoConfig(
        backbone_config={
            "model_type": "swin",
            "embed_dim": 96,
            "depths": [2, 2, 6, 2],
            "num_heads": [3, 6, 12, 24],
            "window_size": 7,
            "out_features": ["stage2", "stage3", "stage4"],
        },
        # BERT-base at its real vocabulary size; the tiny tokenizer's ids all fall inside it.
        text_config={"model_type": "bert", "vocab_size": 30522},
        d_model=256,
        encoder_layers=6,
        decoder_layers=6,
        encoder_ffn_dim=2048,
        decoder_ffn_dim=2048,
        num_queries=900,
        num_feature_levels=4,
        max_text_len=256,
    )


def clipseg_config(bos: int, eos: int, pad: int) -> CLIPSegConfig:
    """CIDAS/clipseg-rd64-refined: CLIP ViT-B/16 + text transformer, reduce_dim 64, refined.

    The special ids come from the tokenizer in use (pooling looks for ``eos``). An
    initializer_factor of 0.1 keeps random logits in the sigmoid's useful range: at 1.0 every
    pixel saturates to 0 or 1 and one prompt takes nearly the whole image.
    """
    return CLIPSegConfig(
        text_config={"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad},
        vision_config={"patch_size": 16, "image_size": 224},
        projection_dim=512,
        reduce_dim=64,
        extract_layers=[3, 6, 9],
        use_complex_transposed_convolution=True,
        initializer_factor=0.1,
    )


def full_size_processors() -> dict[str, Any]:
    """The three processors at the real checkpoints' sizes (Grounding DINO 800/1333, SAM 1024,
    CLIPSeg 352), with the tiny tokenizers (no download), by role."""
    return {
        "grounding_dino": GroundingDinoProcessor(
            image_processor=GroundingDinoImageProcessorPil(
                size={"shortest_edge": 800, "longest_edge": 1333},
                image_mean=IMAGENET_MEAN,
                image_std=IMAGENET_STD,
            ),
            tokenizer=tiny_bert_tokenizer(),
        ),
        "sam": SamProcessor(image_processor=SamImageProcessorPil()),
        "clipseg": CLIPSegProcessor(
            image_processor=ViTImageProcessorPil(
                size={"height": 352, "width": 352},
                image_mean=IMAGENET_MEAN,
                image_std=IMAGENET_STD,
            ),
            tokenizer=tiny_clip_tokenizer(),
        ),
    }


def write_full_size_models(out_dir: Path, seed: int = 0) -> Path:
    """Write random-weight real-size models and processors in the ``--models DIR`` layout.

    No tiny marker is written: these are the real architectures, so loading must not flag them.
    """
    processors = full_size_processors()
    clip = processors["clipseg"].tokenizer
    builders: dict[str, Callable[[], tuple[torch.nn.Module, Any]]] = {
        "grounding_dino": lambda: (
            GroundingDinoForObjectDetection(grounding_dino_config()),
            processors["grounding_dino"],
        ),
        "sam": lambda: (SamModel(sam_config()), processors["sam"]),
        "clipseg": lambda: (
            CLIPSegForImageSegmentation(
                clipseg_config(clip.bos_token_id, clip.eos_token_id, clip.pad_token_id)
            ),
            processors["clipseg"],
        ),
    }
    with torch.random.fork_rng(devices=[]), quiet_progress_bars():
        torch.manual_seed(seed)
        for role, build in builders.items():
            model, processor = build()  # one at a time: three full models at once is ~2 GB
            params = sum(p.numel() for p in model.parameters())
            target = out_dir / MODEL_SUBDIRS[role]
            target.mkdir(parents=True, exist_ok=True)
            model.save_pretrained(target)
            processor.save_pretrained(target)
            print(f"  built {role}: {params / 1e6:.1f}M parameters", flush=True)
            del model
    return out_dir


# --- inputs -----------------------------------------------------------------------------------


def synthetic_image(size: tuple[int, int], seed: int) -> Image.Image:
    """A street-like picture: sky, buildings, sidewalk, road with markings, cars, people."""
    width, height = size
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    sky = np.array([110, 160, 225], np.float32) + 40 * y
    image = np.broadcast_to(sky, (height, width, 3)).copy()
    horizon, curb = 0.45 + 0.05 * rng.random(), 0.62 + 0.04 * rng.random()
    for left in np.sort(rng.uniform(0, 1, 8)):  # building blocks of varied heights
        right, top = left + rng.uniform(0.08, 0.2), rng.uniform(0.1, 0.35)
        block = (x >= left) & (x < right) & (y >= top) & (y < horizon)
        image = np.where(block, rng.uniform(60, 180, 3).astype(np.float32), image)
    image = np.where((y >= horizon) & (y < curb), np.float32(150), image)  # sidewalk
    road = (y >= curb).astype(np.float32)
    image = image * (1 - road) + road * (np.float32(70) + 20 * x)
    marks = (y > 0.8) & (y < 0.81) & ((x * 12) % 1 < 0.5)
    image = np.where(marks, np.float32(235), image)
    for _ in range(6):  # cars and people on the road and the sidewalk
        cx, cy = rng.uniform(0.05, 0.95), rng.uniform(curb, 0.95)
        rx, ry = rng.uniform(0.03, 0.09), rng.uniform(0.02, 0.06)
        body = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1
        image = np.where(body, rng.uniform(0, 255, 3).astype(np.float32), image)
        px, py = rng.uniform(0.05, 0.95), rng.uniform(horizon, curb)
        person = (np.abs(x - px) < 0.006) & (y > py - 0.1) & (y < py)
        image = np.where(person, rng.uniform(0, 255, 3).astype(np.float32), image)
    image += rng.normal(0, 6, image.shape).astype(np.float32)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="RGB")


# --- measurement ------------------------------------------------------------------------------


class Workload:
    """Counts what the SAM decoder is asked per image, by wrapping the segmenter's methods."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.boxes: list[int] = []
        self.point_prompts: list[int] = []
        segmenter = pipeline.backend.segmenter
        box_crops, segment_points = segmenter.box_crops, segmenter.segment_points
        point_probabilities = segmenter.point_probabilities

        def count_boxes(embedding: ImageEmbedding, boxes: np.ndarray) -> BoxCrops:
            self.boxes.append(len(boxes))
            return box_crops(embedding, boxes)

        def count_points(
            embedding: ImageEmbedding, point_sets: Sequence[np.ndarray]
        ) -> PromptMasks:
            self.point_prompts.append(len(point_sets))
            return segment_points(embedding, point_sets)

        def count_seed_points(
            embedding: ImageEmbedding, point_sets: Sequence[np.ndarray]
        ) -> torch.Tensor:
            self.point_prompts.append(len(point_sets))  # one prompt per stuff category
            return point_probabilities(embedding, point_sets)

        segmenter.box_crops = count_boxes  # type: ignore[method-assign]
        segmenter.segment_points = count_points  # type: ignore[method-assign]
        segmenter.point_probabilities = count_seed_points  # type: ignore[method-assign]

    def reset(self) -> None:
        self.boxes.clear()
        self.point_prompts.clear()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_merge_scene() -> ModuleType:
    """``benchmarks/merge_encode.py`` as a module (benchmarks/ is not a package)."""
    path = Path(__file__).with_name("merge_encode.py")
    spec = importlib.util.spec_from_file_location("merge_encode", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def merge_encode_ms(candidates: list[MaskCandidate], min_area: int, runs: int) -> float:
    """Median milliseconds of ``encode_label(merge_panoptic(...))``, after one warm-up."""

    def once() -> None:
        encode_label(merge_panoptic(candidates, min_area=min_area, output_size=MERGE_SIZE))

    once()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        once()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def peak_memory(device: torch.device) -> dict[str, float]:
    # ru_maxrss is in KiB on Linux (bytes on macOS); this benchmark reports Linux figures.
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform != "darwin" else 1 / 1024
    out = {"peak_rss_gib": round(rss_kib * scale / 2**20, 2)}
    if device.type == "cuda":
        out["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return out


# --- main -------------------------------------------------------------------------------------


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH, e.g. 1280x720, got {text!r}") from None
    if width < 64 or height < 64:
        raise argparse.ArgumentTypeError("both sides must be at least 64 pixels")
    return width, height


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--images", type=int, default=2, help="timed images after 1 warm-up")
    parser.add_argument("--size", type=parse_size, default=(1280, 720), help="WxH of the input")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", default="auto", help="auto, float32, float16 or bfloat16")
    parser.add_argument(
        "--stuff-method", choices=("seed", "regions"), default="seed", help="pipeline.stuff_method"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument(
        "--models", type=Path, default=None, help="existing --models DIR instead of random models"
    )
    parser.add_argument("--merge-runs", type=int, default=20, help="runs of merge+encode (median)")
    parser.add_argument("--backend", choices=tuple(BACKEND_STAGES), default="grounded_sam")
    parser.add_argument(
        "--categories", type=int, nargs="+", default=[10, 133], help="taxonomy sizes (max 133)"
    )
    parser.add_argument("--tiny", action="store_true", help="tiny random models (a quick check)")
    parser.add_argument("--prompt-batch", type=int, default=8, help="sam3: phrases per call (K)")
    parser.add_argument("--score-threshold", type=float, default=0.5, help="sam3: instance gate")
    args = parser.parse_args(argv)
    if not all(1 <= n <= 133 for n in args.categories):
        parser.error("--categories must be between 1 and 133")
    if args.images < 1:
        parser.error("--images must be at least 1")
    return args


def coco_taxonomy(count: int, reader: OptionReader, settings: PipelineSettings) -> Taxonomy:
    """The first ``count`` COCO-panoptic categories, things and stuff in the file's proportion
    (80 : 53), with every threshold at ``settings``."""
    categories, options = load_categories_file(COCO_FILE)
    things = [c for c in categories if c.has_instances]
    stuff = [c for c in categories if not c.has_instances]
    n_things = min(len(things), max(1, round(count * len(things) / len(categories))))
    keep = {c.name for c in things[:n_things] + stuff[: count - n_things]}
    bench_options = {
        c.name: CategoryOptions(prompt=options[c.name].prompt, ignore=c.name not in keep)
        for c in categories
    }
    taxonomy = build_taxonomy(categories, bench_options, settings, reader=reader)
    assert len(taxonomy.prompts) == count, (len(taxonomy.prompts), count)
    return taxonomy


@dataclass
class Bench:
    """A loaded back-end and what the loop needs to know of it."""

    name: str
    pipeline: Pipeline
    #: Images through the image encoder so far (the back-end's own counter).
    encoder_passes: Callable[[], int]
    #: The image encoder module, hooked to check the counter.
    encoder: torch.nn.Module
    device: torch.device
    dtype_name: str
    workload: Workload | None = None


def grounded_bench(args: argparse.Namespace, models_dir: Path) -> Bench:
    models = load_models(ModelSettings(device=args.device, dtype=args.dtype), models_dir)
    if not args.tiny and args.models is None and models.is_tiny:
        raise AssertionError("full-size models were flagged as tiny")
    settings = BENCH_SETTINGS.model_copy(update={"stuff_method": args.stuff_method})
    pipeline = Pipeline(GroundedSam(models), settings)
    backend = pipeline.backend
    assert isinstance(backend, GroundedSam)
    return Bench(
        name="grounded_sam",
        pipeline=pipeline,
        encoder_passes=lambda: backend.segmenter.encoder_passes,
        encoder=models.sam.vision_encoder,
        device=models.device,
        dtype_name="/".join(str(d).removeprefix("torch.") for d in models.dtypes.values()),
        workload=Workload(pipeline),
    )


def sam3_bench(args: argparse.Namespace, models_dir: Path | None) -> Bench:
    """SAM 3 from ``models_dir`` through ``load_backend``, or full size in memory."""
    settings = Settings(
        models=ModelSettings(
            backend="sam3",
            device=args.device,
            dtype=args.dtype,
            sam3_prompt_batch=args.prompt_batch,
        ),
        pipeline=PipelineSettings(score_threshold=args.score_threshold, min_area=0),
    )
    if models_dir is not None:
        backend = load_backend(settings, models_dir)
    else:
        backend = full_size_sam3(settings.models)
    assert isinstance(backend, Sam3Backend)
    return Bench(
        name="sam3",
        pipeline=Pipeline(backend, settings.pipeline),
        encoder_passes=lambda: backend.encoder_passes,
        encoder=backend.models.model.vision_encoder,
        device=backend.device,
        dtype_name=str(backend.models.dtype).removeprefix("torch."),
    )


def full_size_sam3(settings: ModelSettings) -> Sam3Backend:
    """``Sam3Model(Sam3Config())`` with random weights, wrapped like the loaded model (the tiny
    CLIP tokenizer's ids all fall inside the real 49408-token vocabulary)."""
    from transformers import Sam3Config, Sam3Model

    device = resolve_device(settings.device)
    dtype = resolve_sam3_dtype(settings.dtype_for("sam3"), device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Sam3Model(Sam3Config()).to(device=device, dtype=dtype).eval()
    config = model.config
    backbone = config.vision_config.backbone_config
    grid = int(backbone.image_size) // int(backbone.patch_size)
    side = round(grid * float(config.vision_config.scale_factors[0]))
    params = sum(p.numel() for p in model.parameters())
    print(f"  built sam3: {params / 1e6:.1f}M parameters", flush=True)
    models = Sam3Models(
        model=model,
        tokenizer=tiny_sam3_tokenizer(),
        image_size=int(backbone.image_size),
        mask_size=(side, side),
        text_length=int(config.text_config.max_position_embeddings),
        device=device,
        dtype=dtype,
        is_tiny=False,
        source="Sam3Model(Sam3Config()), random weights",
    )
    return Sam3Backend(models, prompt_batch=settings.sam3_prompt_batch)


def run_pipeline(
    bench: Bench, taxonomy: Taxonomy, images: int, size: tuple[int, int]
) -> tuple[dict[str, list[float]], list[int], list[PanopticPrediction]]:
    """Warm up on one image, then time ``images`` images; per-image figures per stage."""
    stages = BACKEND_STAGES[bench.name]
    pipeline = bench.pipeline
    hook_calls = [0]

    def count_call(module: object, args: tuple[Any, ...], output: object) -> None:
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        hook_calls[0] += int(tensors[0].shape[0]) if tensors else 1

    hook = bench.encoder.register_forward_hook(count_call)
    per_image: dict[str, list[float]] = {stage: [] for stage in (*stages, "other", "encode")}
    predictions: list[PanopticPrediction] = []
    passes: list[int] = []
    try:
        start = time.perf_counter()
        pipeline.predict(synthetic_image(size, seed=0), taxonomy)
        print(f"  warm-up image: {time.perf_counter() - start:.1f} s", flush=True)
        if bench.workload is not None:
            bench.workload.reset()
        for index in range(1, images + 1):
            image = synthetic_image(size, seed=index)
            timings: dict[str, float] = {}
            passes_before, hooks_before = bench.encoder_passes(), hook_calls[0]
            sync(bench.device)
            start = time.perf_counter()
            prediction = pipeline.predict(image, taxonomy, timings=timings)
            sync(bench.device)
            wall = time.perf_counter() - start
            start = time.perf_counter()
            encode_label(prediction)
            per_image["encode"].append(time.perf_counter() - start)
            for stage in stages:
                per_image[stage].append(timings.get(stage, 0.0))
            per_image["other"].append(wall - sum(timings.values()))
            counter = bench.encoder_passes() - passes_before
            hooked = hook_calls[0] - hooks_before
            if counter != hooked:
                raise AssertionError(
                    f"encoder pass counter says {counter}, vision encoder ran {hooked} times"
                )
            passes.append(hooked)
            predictions.append(prediction)
            line = ", ".join(f"{stage} {timings.get(stage, 0.0):.2f}" for stage in stages)
            print(f"  image {index}/{images}: {wall:.1f} s ({line})", flush=True)
    finally:
        hook.remove()
    return per_image, passes, predictions


def report(
    bench: Bench,
    count: int,
    per_image: dict[str, list[float]],
    passes: list[int],
    predictions: list[PanopticPrediction],
) -> dict[str, Any]:
    """Print one taxonomy size's table; return its figures."""
    stages = BACKEND_STAGES[bench.name]
    n = len(passes)
    mean = {stage: statistics.fmean(values) for stage, values in per_image.items()}
    total = sum(mean.values())
    passes_per_image = sum(passes) / n
    things = statistics.fmean(sum(s.is_thing for s in p.segments) for p in predictions)
    stuff = statistics.fmean(sum(not s.is_thing for s in p.segments) for p in predictions)
    print()
    print(f"{bench.name}, {count} categories, {n} timed image(s), means per image")
    if bench.workload is not None:
        boxes = sum(bench.workload.boxes) / n
        prompts = sum(bench.workload.point_prompts) / n
        print(f"workload per image: {boxes:.1f} boxes decoded by SAM, {prompts:.1f} stuff prompts")
    print(f"panoptic result per image: {things:.1f} things + {stuff:.1f} stuff segments")
    print(f"{'stage':<10}{'s/image':>10}{'share':>9}{'min s':>10}{'max s':>10}")
    for stage in (*stages, "other", "encode"):
        values = per_image[stage]
        print(
            f"{stage:<10}{mean[stage]:>10.3f}{mean[stage] / total:>9.1%}"
            f"{min(values):>10.3f}{max(values):>10.3f}"
        )
    print(f"{'total':<10}{total:>10.3f}{1:>9.0%}   -> {3600 / total:.0f} images/hour")
    verdict = "OK" if passes_per_image == 1 else "FAIL"
    print(f"image encoder passes per image: {passes_per_image:g} ({verdict}, must be 1)")
    memory = peak_memory(bench.device)
    print("peak memory: " + ", ".join(f"{k.removeprefix('peak_')} {v}" for k, v in memory.items()))
    return {
        "categories": count,
        "stage_s": {stage: round(mean[stage], 4) for stage in (*stages, "other", "encode")},
        "total_s": round(total, 3),
        "images_per_hour": round(3600 / total, 1),
        "encoder_passes_per_image": passes_per_image,
        "segments_per_image": round(things + stuff, 1),
        **memory,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="prelabel-bench-") as tmp:
        models_dir = args.models
        start = time.perf_counter()
        if models_dir is None and args.tiny:
            models_dir = write_tiny_models(Path(tmp))
        elif models_dir is None and args.backend == "grounded_sam":
            print("building full-size random-weight models (no tiny marker) ...", flush=True)
            models_dir = write_full_size_models(Path(tmp))
        if args.backend == "sam3":
            bench = sam3_bench(args, models_dir)
        else:
            assert models_dir is not None
            bench = grounded_bench(args, models_dir)
        print(f"  {bench.name} ready in {time.perf_counter() - start:.1f} s", flush=True)
        width, height = args.size
        print(
            f"running {args.images} timed image(s) of {width}x{height} after 1 warm-up per "
            f"taxonomy on {bench.device} ({bench.dtype_name}), torch threads "
            f"{torch.get_num_threads()}",
            flush=True,
        )
        results = []
        reader = backend_spec(bench.name).option_reader()
        for count in args.categories:
            taxonomy = coco_taxonomy(count, reader, bench.pipeline.settings)
            if bench.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(bench.device)
            per_image, passes, predictions = run_pipeline(bench, taxonomy, args.images, args.size)
            results.append(report(bench, count, per_image, passes, predictions))

    merge_scene = load_merge_scene()
    candidates = merge_scene.scene(MERGE_SIZE)
    ms = merge_encode_ms(candidates, BENCH_SETTINGS.min_area, args.merge_runs)
    merge_verdict = "PASS" if ms <= TARGET_MS else "FAIL"
    print(
        f"merge + encode {MERGE_SIZE[0]}x{MERGE_SIZE[1]} ({len(candidates)} candidates from "
        f"merge_encode.scene): median {ms:.1f} ms of {args.merge_runs}, target "
        f"{TARGET_MS:.0f} ms: {merge_verdict}"
    )
    summary = {
        "backend": bench.name,
        "device": str(bench.device),
        "device_name": (
            torch.cuda.get_device_name(bench.device) if bench.device.type == "cuda" else None
        ),
        "dtype": bench.dtype_name,
        "torch_threads": torch.get_num_threads(),
        "random_weights": args.models is None,
        "tiny": args.tiny,
        "image_size": [width, height],
        "images": args.images,
        "by_categories": results,
        "merge_encode_ms": round(ms, 2),
        "merge_encode_pass": ms <= TARGET_MS,
    }
    print(json.dumps(summary))
    if any(r["encoder_passes_per_image"] != 1 for r in results):
        print("FAIL: the image encoder must run exactly once per image", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
