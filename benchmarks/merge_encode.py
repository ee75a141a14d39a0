"""Time the panoptic merge and the label encoding on a realistic 1920x1080 case.

The issue's target: merge + encode of one 1920x1080 image in at most 50 ms on the 2-core CPU.
The scene is seeded: ~20 things (ellipses and rectangles of mixed sizes, overlapping) over 8
stuff candidates (wavy horizontal bands, two categories split in two parts each, neighbouring
bands overlapping). It is timed twice: masks given at 1920x1080, and masks at the working size
1024x576 resized to 1920x1080 by the merge (``output_size``), as the pipeline does for large
images. A third case gives the things' masks cropped to their windows, as the grounded_sam
back-end does (the same map, checked).

It also times the PNG step alone against its baseline in the same run: the SDK's
``bitmap2file`` (PIL's adaptive row filters, default zlib level) versus prelabel's
``segmentation_png`` (one "Up" filter, zlib level 1), checking both decode to the same ids, and
prints the speed-up.

Run: ``python benchmarks/merge_encode.py [--runs 20]``
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from PIL import Image
from segments.utils import bitmap2file

from prelabel.formats.bitmap import segmentation_png
from prelabel.formats.label import encode_label
from prelabel.panoptic import MaskCandidate, PanopticPrediction
from prelabel.pipeline.merge import merge_panoptic

TARGET_MS = 50.0
FULL = (1920, 1080)
WORKING = (1024, 576)
MIN_AREA = 100


def scene(size: tuple[int, int], seed: int = 0) -> list[MaskCandidate]:
    """Candidates drawn in relative coordinates, so every size shows the same scene."""
    width, height = size
    rng = np.random.default_rng(seed)
    y = (np.arange(height, dtype=np.float32) / height)[:, None]
    x = (np.arange(width, dtype=np.float32) / width)[None, :]
    candidates: list[MaskCandidate] = []

    # 8 stuff candidates, 6 categories: bands with wavy edges; bands overlap their neighbours.
    edges = np.linspace(0.0, 1.0, 7)
    for k in range(6):
        top = edges[k] - 0.03 + 0.02 * np.sin(x * 9 + k)
        bottom = edges[k + 1] + 0.03 + 0.02 * np.cos(x * 7 + k)
        band = (y >= top) & (y < bottom)
        if k < 2:  # two categories arrive as a left and a right part (unioned by the merge)
            split = 0.45 + 0.1 * k
            parts = [band & (x < split + 0.02), band & (x >= split - 0.02)]
        else:
            parts = [band]
        for part in parts:
            candidates.append(
                MaskCandidate(
                    mask=part,
                    category_id=100 + k,
                    score=float(rng.uniform(0.3, 0.9)),
                    is_thing=False,
                )
            )

    # 20 things: mixed sizes, clustered so that several overlap.
    for i in range(20):
        cy, cx = rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.95)
        ry, rx = rng.uniform(0.02, 0.2), rng.uniform(0.015, 0.12)
        if i % 3 == 0:
            mask = (np.abs(y - cy) <= ry) & (np.abs(x - cx) <= rx)
        else:
            mask = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1
        candidates.append(
            MaskCandidate(
                mask=np.ascontiguousarray(mask),
                category_id=1 + i % 5,
                score=float(rng.uniform(0.3, 0.95)),
                is_thing=True,
            )
        )
    return candidates


def median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up: first-call allocations and imports are not what we measure
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def decode_ids(png: bytes) -> npt.NDArray[np.uint32]:
    """What segments.utils.load_label_bitmap_from_url does after its download."""
    array = np.array(Image.open(io.BytesIO(png)))
    assert array.shape[2] == 4 and (array[:, :, 3] == 255).all()
    array[:, :, 3] = 0
    return array.view(np.uint32).squeeze(2)


def run_case(label: str, candidates: list[MaskCandidate], runs: int) -> float:
    def merge() -> PanopticPrediction:
        return merge_panoptic(candidates, min_area=MIN_AREA, output_size=FULL)

    prediction = merge()
    merge_ms = median_ms(merge, runs)
    encode_ms = median_ms(lambda: encode_label(prediction), runs)
    both_ms = median_ms(lambda: encode_label(merge()), runs)
    things = sum(s.is_thing for s in prediction.segments)
    print(
        f"{label}: {len(candidates)} candidates -> {things} things + "
        f"{len(prediction.segments) - things} stuff, map {prediction.size[0]}x{prediction.size[1]}"
    )
    print(f"  merge           {merge_ms:7.1f} ms")
    print(f"  encode          {encode_ms:7.1f} ms  (png {len(encode_label(prediction).png)} bytes)")
    verdict = "PASS" if both_ms <= TARGET_MS else "FAIL"
    print(f"  merge+encode    {both_ms:7.1f} ms  target {TARGET_MS:.0f} ms: {verdict}")
    return both_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per figure (median)")
    args = parser.parse_args()

    full = scene(FULL)
    working = scene(WORKING)
    print(f"median of {args.runs} runs, min_area={MIN_AREA}")
    run_case(f"masks at {FULL[0]}x{FULL[1]}", full, args.runs)
    cropped = [c.cropped() if c.is_thing else c for c in full]
    same = merge_panoptic(cropped, min_area=MIN_AREA, output_size=FULL)
    assert np.array_equal(same.id_map, merge_panoptic(full, min_area=MIN_AREA).id_map)
    run_case(f"masks at {FULL[0]}x{FULL[1]}, things cropped", cropped, args.runs)
    run_case(f"masks at {WORKING[0]}x{WORKING[1]} -> {FULL[0]}x{FULL[1]}", working, args.runs)

    id_map = merge_panoptic(full, min_area=MIN_AREA).id_map
    print("PNG step alone (same map):")
    sdk = bitmap2file(id_map).getvalue()
    ours = segmentation_png(id_map)
    assert np.array_equal(decode_ids(ours), id_map), "segmentation_png must decode to the ids"
    assert np.array_equal(decode_ids(sdk), id_map)
    sdk_ms = median_ms(lambda: bitmap2file(id_map), args.runs)
    ours_ms = median_ms(lambda: segmentation_png(id_map), args.runs)
    print(f"  bitmap2file (SDK baseline)  {sdk_ms:7.1f} ms  ({len(sdk)} bytes)")
    print(f"  segmentation_png (prelabel) {ours_ms:7.1f} ms  ({len(ours)} bytes)")
    print(f"  speed-up                    {sdk_ms / ours_ms:7.1f}x")


if __name__ == "__main__":
    main()
