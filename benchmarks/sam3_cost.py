"""What SAM 3 costs per image here: the vision encoder once, then the detector per prompt batch.

Builds ``Sam3Model(Sam3Config())`` (the released architecture: ViT-L/14 at 1008, CLIP text
encoder, DETR encoder and decoder, 200 queries) with random weights: no download, the same
compute as the real model. It then runs the back-end's own :class:`Sam3Predictor` on one
synthetic image: the vision encoder (one pass), the text encoder for ``--phrases`` phrases
(once per run), and for each ``--k`` the detector over all phrases in batches of K, both as
instances (score gate, masks upscaled to the image) and as semantic maps. Prints seconds per
stage, seconds per phrase, detector calls, encoder passes (must be 1) and peak memory; the last
line is one JSON object with the figures.

On the shared 2-core CPU the vision encoder alone takes a minute or more, so the defaults are
small (8 phrases, K = 1 and 4); the encoder runs once and every K reuses its features.
``--tiny`` runs the tiny random model instead, in seconds, to check the script.

Run: ``python benchmarks/sam3_cost.py [--phrases 8] [--k 1 4] [--size 1280x720]
[--device auto] [--dtype float32|bfloat16] [--threads N] [--tiny]``
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import resource
import time
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import Sam3Config, Sam3Model

from prelabel.backends.sam3.loading import Sam3Models
from prelabel.backends.sam3.predictor import Sam3Predictor
from prelabel.backends.sam3.tiny import tiny_sam3_config, tiny_sam3_tokenizer

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def main() -> None:
    args = _parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    dtype = _DTYPES[args.dtype]
    started = time.perf_counter()
    models = _build(device, dtype, tiny=args.tiny)
    build_s = time.perf_counter() - started
    width, height = (int(v) for v in args.size.split("x"))
    image = _image(width, height)
    phrases = [f"object number {i}" for i in range(args.phrases)]
    figures: dict[str, Any] = {
        "device": str(device),
        "dtype": args.dtype,
        "tiny": args.tiny,
        "parameters_m": round(sum(p.numel() for p in models.model.parameters()) / 1e6, 1),
        "image_size": models.image_size,
        "phrases": len(phrases),
        "build_s": round(build_s, 1),
        "k": {},
    }
    encoder = Sam3Predictor(models)
    encode_s, (features,) = _timed(device, lambda: encoder.encode([image]))
    figures["vision_encoder_s"] = round(encode_s, 2)
    figures["encoder_passes"] = encoder.encoder_passes
    print(f"vision encoder: {encode_s:.2f} s, {encoder.encoder_passes} pass", flush=True)
    for k in args.k:
        predictor = Sam3Predictor(models, prompt_batch=k)
        text_s, _ = _timed(device, functools.partial(predictor.prepare_text, phrases))
        things_s, found = _timed(
            device,
            functools.partial(predictor.instances, features, phrases, [0.5] * len(phrases)),
        )
        calls = predictor.detector_calls
        stuff_s, _ = _timed(device, functools.partial(predictor.semantic_logits, features, phrases))
        figures["k"][k] = {
            "text_encoder_s": round(text_s, 2),
            "things_s": round(things_s, 2),
            "things_s_per_phrase": round(things_s / len(phrases), 3),
            "stuff_s": round(stuff_s, 2),
            "stuff_s_per_phrase": round(stuff_s / len(phrases), 3),
            "detector_calls_per_branch": calls,
            "instances": sum(len(i) for i in found),
        }
        print(f"K={k}: {figures['k'][k]}", flush=True)
        predictor.close()
    assert encoder.encoder_passes == 1
    figures["peak_memory_mb"] = _peak_mb(device)
    print(json.dumps(figures))


def _build(device: torch.device, dtype: torch.dtype, *, tiny: bool) -> Sam3Models:
    tokenizer = tiny_sam3_tokenizer()
    config = tiny_sam3_config(tokenizer) if tiny else Sam3Config()
    torch.manual_seed(0)
    model = Sam3Model(config).to(device, dtype).eval()
    vision = model.config.vision_config
    side = int(vision.backbone_config.image_size)
    mask = side // int(vision.backbone_config.patch_size) * 4
    return Sam3Models(
        model=model,
        tokenizer=tokenizer,
        image_size=side,
        mask_size=(mask, mask),
        text_length=int(model.config.text_config.max_position_embeddings),
        device=device,
        dtype=dtype,
        is_tiny=True,
        source="random weights",
    )


def _image(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    array[: height // 3] = (90, 140, 220)
    return Image.fromarray(array)


def _timed(device: torch.device, call: Any) -> tuple[float, Any]:
    _sync(device)
    started = time.perf_counter()
    result = call()
    _sync(device)
    return time.perf_counter() - started, result


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phrases", type=int, default=8)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="float32")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--tiny", action="store_true")
    return parser.parse_args()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
