"""prelabel's ``stuff_method: seed`` against the reference port, over a grid of cases.

For each case (stuff-only or things-plus-stuff taxonomy, background threshold, shrink kernel,
image size and orientation) it prints, per image:

- ``agree``: the share of non-thing pixels where prelabel's stuff category equals the port's
  (``tests/reference/seed_panoptic.py``, separate code written from the seed's description);
- ``stable``: the port against itself with 1e-5 noise on its CLIPSeg and SAM probabilities, the
  best agreement a second implementation can be expected to reach there; ``st.clip`` and
  ``st.sam``: the same with the noise on one model's maps only;
- ``stuff``: non-thing pixels holding stuff in prelabel's map, ``prompted``: stuff categories
  that got SAM points (0 = every region was eroded away, both maps are empty).

Two properties of the tiny random models show in the table: their speckled CLIPSeg map loses
every region to the seed's default 20-pixel erosion (``prompted`` 0 on the kernel-20 rows), and
the port's stability under CLIPSeg-side noise is often far below 1 (a few flipped coarse pixels
move the probability-weighted point draw, and SAM's maps move with the points), while SAM-side
noise alone barely flips anything. The last line is one JSON object with every row and a summary.

Run: ``python benchmarks/seed_parity.py [--models DIR]`` (tiny models by default; about two
minutes on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from prelabel.backends.grounded_sam.backend import GroundedSam  # noqa: E402
from prelabel.backends.grounded_sam.loading import load_models  # noqa: E402
from prelabel.config import ModelSettings, PipelineSettings  # noqa: E402
from prelabel.pipeline.pipeline import Pipeline  # noqa: E402
from prelabel.taxonomy import Category, build_taxonomy  # noqa: E402
from prelabel.weights.tiny import write_tiny_models  # noqa: E402
from tests.reference.parity import measure  # noqa: E402

THINGS = [Category(100, "person", True), Category(101, "car", True)]
STUFF = ["sky", "road", "grass", "tree", "building"]
TAXONOMIES = {
    "stuff2": (False, 2),
    "stuff3": (False, 3),
    "stuff5": (False, 5),
    "things+stuff2": (True, 2),
    "things+stuff3": (True, 3),
}
#: (width, height, seed): landscape and portrait.
IMAGES = [(96, 64, 1), (64, 96, 0)]
BACKGROUNDS = (0.1, 0.5)
KERNELS = (0, 2, 20)
STABLE = 0.99


def image(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--models", type=Path, default=None, help="--models DIR (default: tiny)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="prelabel-parity-") as tmp:
        models_dir = args.models or write_tiny_models(Path(tmp))
        models = load_models(ModelSettings(device="cpu"), models_dir)
    header = (
        f"{'taxonomy':<15}{'bg':>5}{'k':>4}{'image':>9}{'agree':>9}{'stable':>9}"
        f"{'st.clip':>9}{'st.sam':>9}{'stuff':>7}{'prompted':>9}"
    )
    print(header)
    rows = []
    for (name, (things, count)), background, kernel, (w, h, seed) in itertools.product(
        TAXONOMIES.items(), BACKGROUNDS, KERNELS, IMAGES
    ):
        settings = PipelineSettings(
            background_threshold=background, shrink_kernel=kernel, min_area=0, max_detections=1
        )
        categories = (THINGS if things else []) + [
            Category(i + 1, stuff) for i, stuff in enumerate(STUFF[:count])
        ]
        taxonomy = build_taxonomy(categories, {}, settings)
        result = measure(
            Pipeline(GroundedSam(models), settings), image(w, h, seed), taxonomy, split=True
        )
        print(
            f"{name:<15}{background:>5}{kernel:>4}{f'{w}x{h}':>9}{result.agreement:>9.4f}"
            f"{result.stability:>9.4f}{result.stability_clipseg or 0:>9.4f}"
            f"{result.stability_sam or 0:>9.4f}{result.ours_stuff:>7}{result.prompted:>9}",
            flush=True,
        )
        rows.append(
            {
                "taxonomy": name,
                "background_threshold": background,
                "shrink_kernel": kernel,
                "image": [w, h, seed],
                **result.as_dict(),
            }
        )
    compared = [r for r in rows if r["prompted"]]
    stable = [r for r in compared if r["stability"] >= STABLE]
    summary = {
        "rows": len(rows),
        "rows_with_stuff_prompted": len(compared),
        "kernel20_rows_prompted": sum(
            1 for r in rows if r["shrink_kernel"] == 20 and r["prompted"]
        ),
        "stable_rows": len(stable),
        "min_agreement_where_stable": min((r["agreement"] for r in stable), default=None),
        "min_agreement_overall": min((r["agreement"] for r in compared), default=None),
        "min_stability": min((r["stability"] for r in compared), default=None),
        "min_stability_sam_only": min((r["stability_sam"] for r in compared), default=None),
        "min_stability_clipseg_only": min((r["stability_clipseg"] for r in compared), default=None),
    }
    print(
        f"{len(compared)} of {len(rows)} rows prompt SAM for stuff; the port is stable "
        f"(>= {STABLE}) in {len(stable)}; agreement where stable: at least "
        f"{summary['min_agreement_where_stable']}; "
        f"overall at least {summary['min_agreement_overall']}"
    )
    print(json.dumps({"summary": summary, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
