"""Grounding DINO boxes in bfloat16 against float32 on a GPU: the evidence ``dtype: auto`` needs.

``models.dtype: auto`` keeps Grounding DINO in float32 on CUDA (SAM and CLIPSeg go to bf16)
because bf16 moves what the deformable attention samples, and with the tiny model on the CPU it
turns every box into NaN. Whether real weights on a real GPU keep their boxes in bf16 has not
been measured; this script measures it. It loads the detector twice from ``--models DIR``
(``DIR/grounding_dino``, real weights wanted; tiny random ones by default, which only shows
whether bf16 breaks, not how far real boxes move), runs both on the same images with the same
thing prompts, matches boxes per category (IoU >= 0.5, greedy by IoU) and reports per image:
boxes in each dtype, matched, mean IoU of the matches, largest corner shift in pixels, largest
score difference, and milliseconds per call. A bf16 run that returns NaN counts as failed
(prelabel raises NonFiniteOutputError for it).

Without a CUDA GPU it says so and exits 0 with ``"measured": false`` in its JSON line, because
a CPU comparison says nothing about the GPU kernels; ``--allow-cpu`` runs it on the CPU anyway.

Run: ``python benchmarks/dtype_boxes.py --models ~/prelabel-models [--images 8]
[--image-dir photos/] [--size 1280x720] [--categories configs/street-scene-categories.yaml]``.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import GroundingDinoForObjectDetection, GroundingDinoProcessor

from prelabel.backends.finite import NonFiniteOutputError
from prelabel.backends.grounded_sam.detect import ThingDetector
from prelabel.backends.loading import quiet_progress_bars
from prelabel.config import PipelineSettings
from prelabel.images import decode_image, find_images, fit_within
from prelabel.pipeline.boxes import Detections, box_iou
from prelabel.taxonomy import build_taxonomy, load_categories_file
from prelabel.weights.tiny import write_tiny_models

REPO = Path(__file__).resolve().parent.parent
MATCH_IOU = 0.5


def load_detector(folder: Path, dtype: torch.dtype, device: torch.device) -> ThingDetector:
    """Grounding DINO alone (not SAM and CLIPSeg, which the comparison does not need)."""
    with quiet_progress_bars():
        model = GroundingDinoForObjectDetection.from_pretrained(folder, dtype=dtype)
        processor = GroundingDinoProcessor.from_pretrained(folder)
    model = model.to(device).eval()
    return ThingDetector(model, processor, device)


def compare(reference: Detections, other: Detections) -> dict[str, Any]:
    """Greedy per-category matching of ``other``'s boxes to ``reference``'s."""
    ious, shifts, score_diffs = [], [], []
    for category in np.unique(np.concatenate([reference.category_ids, other.category_ids])):
        ref = np.flatnonzero(reference.category_ids == category)
        oth = np.flatnonzero(other.category_ids == category)
        if not len(ref) or not len(oth):
            continue
        iou = box_iou(reference.boxes[ref], other.boxes[oth])
        while iou.size and iou.max() >= MATCH_IOU:
            i, j = np.unravel_index(int(iou.argmax()), iou.shape)
            ious.append(float(iou[i, j]))
            shifts.append(float(np.abs(reference.boxes[ref[i]] - other.boxes[oth[j]]).max()))
            score_diffs.append(abs(float(reference.scores[ref[i]] - other.scores[oth[j]])))
            iou[i, :], iou[:, j] = -1, -1
    return {
        "fp32_boxes": len(reference),
        "bf16_boxes": len(other),
        "matched": len(ious),
        "mean_iou": round(statistics.fmean(ious), 4) if ious else None,
        "max_shift_px": round(max(shifts), 2) if shifts else None,
        "max_score_diff": round(max(score_diffs), 4) if score_diffs else None,
    }


def timed_detect(detector: ThingDetector, image: Image.Image, prompts: Any) -> tuple[Any, float]:
    if detector.device.type == "cuda":
        torch.cuda.synchronize(detector.device)
    start = time.perf_counter()
    found = detector.detect(image, prompts, nms_iou=0.5, cross_category_iou=0.9, max_detections=100)
    if detector.device.type == "cuda":
        torch.cuda.synchronize(detector.device)
    return found, (time.perf_counter() - start) * 1000


def synthetic_images(count: int, size: tuple[int, int]) -> list[Image.Image]:
    """Street-like pictures from ``benchmarks/pipeline_stages.py`` (benchmarks/ is no package)."""
    path = Path(__file__).with_name("pipeline_stages.py")
    spec = importlib.util.spec_from_file_location("pipeline_stages", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [module.synthetic_image(size, seed=seed) for seed in range(count)]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--models", type=Path, default=None, help="--models DIR (default: tiny)")
    parser.add_argument("--images", type=int, default=8, help="synthetic images to compare on")
    parser.add_argument("--image-dir", type=Path, default=None, help="use these photos instead")
    parser.add_argument("--size", default="1280x720", help="WxH of the synthetic images")
    parser.add_argument(
        "--categories",
        type=Path,
        default=REPO / "configs" / "street-scene-categories.yaml",
        help="categories file whose things are prompted",
    )
    parser.add_argument("--allow-cpu", action="store_true", help="compare on the CPU if no GPU")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    if torch.cuda.is_available():
        device = torch.device("cuda")
    elif args.allow_cpu:
        device = torch.device("cpu")
    else:
        print(
            "no CUDA GPU on this machine: the bf16-versus-fp32 comparison of Grounding DINO "
            "boxes needs one (a CPU run says nothing about the GPU kernels), so nothing was "
            "measured and models.dtype: auto keeps Grounding DINO in float32. Run this on a GPU "
            "box, or pass --allow-cpu to compare on the CPU anyway."
        )
        print(json.dumps({"gpu": False, "measured": False, "device": "cpu"}))
        return 0

    categories, options = load_categories_file(args.categories)
    prompts = build_taxonomy(categories, options, PipelineSettings()).things
    if args.image_dir is not None:
        paths = find_images([args.image_dir])
        images = [decode_image(p, max_pixels=120_000_000) for p in paths]
    else:
        width, height = (int(v) for v in args.size.lower().split("x"))
        images = synthetic_images(args.images, (width, height))
    images = [fit_within(image, PipelineSettings().max_image_side).image for image in images]

    with tempfile.TemporaryDirectory(prefix="prelabel-dtype-") as tmp:
        models_dir = args.models or write_tiny_models(Path(tmp))
        folder = Path(models_dir).expanduser() / "grounding_dino"
        fp32 = load_detector(folder, torch.float32, device)
        bf16 = load_detector(folder, torch.bfloat16, device)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"Grounding DINO from {folder} on {name}: {len(prompts)} thing prompts")
    print(f"{'image':>6}{'fp32':>6}{'bf16':>6}{'matched':>9}{'mean IoU':>10}{'shift px':>10}")
    rows = []
    for index, image in enumerate(images):
        reference, fp32_ms = timed_detect(fp32, image, prompts)
        try:
            other, bf16_ms = timed_detect(bf16, image, prompts)
        except NonFiniteOutputError as exc:
            print(f"{index:>6}{len(reference):>6}   NaN  bf16 failed: {exc}")
            rows.append({"image": index, "bf16_non_finite": True, "fp32_boxes": len(reference)})
            continue
        row = {"image": index, "bf16_non_finite": False, **compare(reference, other)}
        row.update(fp32_ms=round(fp32_ms, 1), bf16_ms=round(bf16_ms, 1))
        rows.append(row)
        print(
            f"{index:>6}{row['fp32_boxes']:>6}{row['bf16_boxes']:>6}{row['matched']:>9}"
            f"{row['mean_iou'] or 0:>10.3f}{row['max_shift_px'] or 0:>10.1f}"
        )
    finite = [r for r in rows if not r["bf16_non_finite"]]
    reference_boxes = sum(r["fp32_boxes"] for r in finite)
    kept = sum(r["matched"] for r in finite) / reference_boxes if reference_boxes else None
    summary = {
        "gpu": device.type == "cuda",
        "measured": True,
        "device": name,
        "models": str(folder),
        "random_weights": args.models is None,
        "images": len(rows),
        "bf16_non_finite_images": len(rows) - len(finite),
        "fp32_boxes_kept_in_bf16": None if kept is None else round(kept, 4),
        "rows": rows,
    }
    share = "none" if kept is None else f"{kept:.1%}"
    print(
        f"bf16 failed with non-finite outputs on {summary['bf16_non_finite_images']} of "
        f"{len(rows)} images; of the fp32 boxes on the rest, {share} have a bf16 box of the "
        f"same category at IoU >= {MATCH_IOU}"
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
