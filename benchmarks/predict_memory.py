"""Peak RSS of ``prelabel predict`` on a 4000x3000 image with the COCO-panoptic taxonomy.

Issue 16 asks that large images stay bounded in memory at the working size (``max_image_side``,
2048 by default): whatever the taxonomy, the seed stuff method never holds one full-size map per
category at once. This runs the real command in a fresh process per configuration, with the
tiny random-weight models (written to a temporary folder), on a synthetic 4000x3000 JPEG and
``configs/coco-panoptic-categories.yaml`` (80 things, 53 stuff), and reads each child's peak
resident set size from ``os.wait4``. Target: under 3 GB.

Configurations:

- ``seed`` with the default ``shrink_kernel`` 20. With the tiny models this erases every
  CLIPSeg region (their map is speckled), so no stuff category reaches SAM: it measures the
  coarse stage (53 upscaled maps, argmax, erosion) but not the SAM stuff calls.
- ``seed`` with ``shrink_kernel: 0``: every stuff category CLIPSeg wins somewhere outside the
  things gets its points and a SAM decoder call, each map upscaled to 2048x1536.
- the same with ``box_threshold: 1.0``, so that no thing is detected and nearly every one of the
  53 stuff categories prompts SAM: the worst case for the stuff branch's memory.
- ``regions``, the previous method, for comparison.

With real weights the model parameters add to these figures (SAM ViT-H alone is 2.5 GB in
float32); the figures here are the pipeline's own working memory plus torch and the tiny models.

Run: ``python benchmarks/predict_memory.py [--size 4000x3000] [--threads 2]``. About a minute
per configuration on a 2-core CPU. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
CATEGORIES = REPO / "configs" / "coco-panoptic-categories.yaml"
TARGET_GB = 3.0

CONFIGS = {
    "seed (shrink_kernel 20)": "pipeline: {stuff_method: seed}\n",
    "seed (shrink_kernel 0)": "pipeline: {stuff_method: seed, shrink_kernel: 0}\n",
    "seed (kernel 0, no things)": "pipeline: {shrink_kernel: 0, box_threshold: 1.0}\n",
    "regions": "pipeline: {stuff_method: regions}\n",
}


def synthetic_photo(size: tuple[int, int], path: Path) -> None:
    """A smooth gradient with blobs and noise, saved as JPEG (the size a phone photo has)."""
    width, height = size
    rng = np.random.default_rng(0)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    channels = [200 * y + 30 * x, 120 + 80 * np.sin(6 * x + 3 * y), 255 * (1 - y) * x]
    image = np.stack(channels, axis=2)
    for _ in range(12):
        cx, cy, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.03, 0.12)
        blob = (x - cx) ** 2 + ((y - cy) * height / width) ** 2 <= r**2
        image = np.where(blob[..., None], rng.uniform(0, 255, 3).astype(np.float32), image)
    image += rng.normal(0, 8, image.shape).astype(np.float32)
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, quality=90)


def run_predict(
    image: Path, models: Path, config: Path, out: Path, threads: int
) -> tuple[float, float, int, str]:
    """Peak RSS in GB, wall seconds, exit code and log of one ``prelabel predict`` process."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "prelabel",
        "-vv",
        "predict",
        str(image),
        "--categories",
        str(CATEGORIES),
        "--out",
        str(out),
        "--models",
        str(models),
        "--config",
        str(config),
        "--quiet",
    ]
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert child.stderr is not None
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    log = stderr.decode(errors="replace")
    if child.returncode:
        sys.stderr.write(log)
    # ru_maxrss is KiB on Linux, bytes on macOS.
    scale = 1024 if sys.platform != "darwin" else 1
    return usage.ru_maxrss * scale / 1e9, seconds, child.returncode, log


def sam_stuff_calls(log: str) -> int:
    """Stuff categories that prompted SAM, from the seed method's debug line (0 for regions)."""
    found = re.search(r"seed stuff: (\d+) of \d+ categories prompt SAM", log)
    return int(found.group(1)) if found else 0


def segments_written(out: Path) -> tuple[int, int]:
    """Thing and stuff segments in the one label ``predict`` wrote."""
    (label,) = (out / "labels").glob("*.json")
    segments = json.loads(label.read_text(encoding="utf-8"))["segments"]
    things = sum(1 for s in segments if s["is_thing"])
    return things, len(segments) - things


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--size", default="4000x3000", help="WxH of the synthetic photo")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the child")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    sys.path.insert(0, str(REPO))
    from prelabel.weights.tiny import write_tiny_models

    results = {}
    with tempfile.TemporaryDirectory(prefix="prelabel-memory-") as tmp:
        root = Path(tmp)
        models = write_tiny_models(root / "models")
        image = root / "photo.jpg"
        synthetic_photo((width, height), image)
        print(f"prelabel predict on a {width}x{height} JPEG, COCO-panoptic taxonomy, tiny models")
        print(
            f"{'configuration':<29}{'peak RSS GB':>12}{'seconds':>9}{'things':>8}{'stuff':>7}"
            f"{'SAM stuff calls':>17}"
        )
        for index, (name, text) in enumerate(CONFIGS.items()):
            config = root / f"config{index}.yaml"
            config.write_text(text, encoding="utf-8")
            out = root / f"out{index}"
            peak, seconds, code, log = run_predict(image, models, config, out, args.threads)
            if code:
                print(f"{name:<29} FAILED (exit code {code})")
                results[name] = {"exit_code": code}
                continue
            things, stuff = segments_written(out)
            calls = sam_stuff_calls(log)
            print(
                f"{name:<29}{peak:>12.2f}{seconds:>9.1f}{things:>8}{stuff:>7}{calls:>17}",
                flush=True,
            )
            results[name] = {
                "peak_rss_gb": round(peak, 3),
                "seconds": round(seconds, 1),
                "things": things,
                "stuff": stuff,
                "sam_stuff_calls": calls,
            }
    peaks = [r["peak_rss_gb"] for r in results.values() if "peak_rss_gb" in r]
    passed = len(peaks) == len(CONFIGS) and max(peaks) < TARGET_GB
    print(f"target: every peak under {TARGET_GB:g} GB: {'PASS' if passed else 'FAIL'}")
    summary = {
        "image_size": [width, height],
        "taxonomy": CATEGORIES.name,
        "threads": args.threads,
        "target_gb": TARGET_GB,
        "pass": passed,
        "configs": results,
    }
    print(json.dumps(summary))
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
