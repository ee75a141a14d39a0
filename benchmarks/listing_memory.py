"""Memory of listing a dataset with ``SegmentsApi.iter_samples``: flat in the sample count?

The connector lists every sample (page by page, through the real SDK) before deciding what to
label. It must not hold the whole listing: a 100,000-sample dataset would otherwise cost
hundreds of MB. This benchmark lists 1,000 and 10,000 samples from the emulator and measures,
for the listing loop alone:

- the tracemalloc peak of Python allocations above the level before the loop (the clean
  measure: the emulator runs in another process, so only the client's allocations count);
- the peak resident set size above the level before any listing, sampled from /proc once per
  page over a warm-up listing and a timed one, without tracemalloc (noisier: first-use caches,
  allocator arenas and fragmentation show up here);
- samples per second, from the timed listing.

Each count is measured in a fresh process, with its emulator in a child process of its own.

and prints the 10,000 / 1,000 ratio of each memory figure; flat memory means a ratio near 1.
For contrast it also reports what holding the listed samples in a list would cost, which is
what a listing that grows with the count looks like.

Run: ``python benchmarks/listing_memory.py [--counts 1000 10000] [--page-size 500]``
"""

from __future__ import annotations

import argparse
import gc
import io
import multiprocessing as mp
import os
import resource
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection

import numpy as np
from PIL import Image
from segments import SegmentsClient

from prelabel.config import RemoteSettings
from prelabel.segments.client import SampleRef, SegmentsApi

KEY = "benchmark-key"
DATASET = "jane/big"
LABELSET = "ground-truth"
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def _serve(count: int, conn: Connection) -> None:
    """Child process: an emulator with ``count`` samples; sends its URL, serves until told."""
    from prelabel.emulator import Emulator

    pixels = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    with Emulator(KEY) as emulator:
        emulator.create_dataset(DATASET, categories=[{"id": 1, "name": "object"}])
        url = emulator.add_asset(buffer.getvalue(), "image.png")
        emulator.add_samples(
            DATASET,
            (
                {
                    "name": f"image_{i:06d}.png",
                    "attributes": {"image": {"url": url}},
                    "metadata": {"index": i, "split": "train" if i % 5 else "val"},
                }
                for i in range(count)
            ),
        )
        conn.send(emulator.url)
        conn.recv()  # any message: stop


def _rss_bytes() -> int:
    """Current resident set size (Linux /proc; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass(frozen=True)
class Measurement:
    count: int
    listed: int
    seconds: float
    traced_peak: int
    rss_peak: int
    held_list: int

    @property
    def per_second(self) -> float:
        return self.listed / self.seconds


def _iterate(api: SegmentsApi, page_size: int, on_page: list[int] | None = None) -> int:
    listed = 0
    for _sample in api.iter_samples(DATASET, LABELSET):
        listed += 1
        if on_page is not None and listed % page_size == 0:
            on_page.append(_rss_bytes())
    return listed


def measure(count: int, page_size: int) -> Measurement:
    """Serve ``count`` samples from a child process and measure listing them here."""
    parent, child = mp.Pipe()
    server = mp.get_context("spawn").Process(target=_serve, args=(count, child), daemon=True)
    server.start()
    try:
        url = parent.recv()
        settings = RemoteSettings(api_url=url, page_size=page_size)
        api = SegmentsApi(SegmentsClient(KEY, api_url=url), settings)
        # Warm-up listing (pydantic schema caches, connection pool); RSS is sampled from here
        # on, so first-use costs count once, the same for every count.
        gc.collect()
        rss: list[int] = []
        rss_before = _rss_bytes()
        _iterate(api, page_size, on_page=rss)

        # Pass 1: throughput, and RSS, without tracemalloc (it slows allocation, uses memory).
        started = time.perf_counter()
        listed = _iterate(api, page_size, on_page=rss)
        seconds = time.perf_counter() - started
        rss_peak = max([*rss, _rss_bytes()]) - rss_before

        # Pass 2: the peak of Python allocations during the loop.
        gc.collect()
        tracemalloc.start()
        traced_before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        _iterate(api, page_size)
        _, traced_peak = tracemalloc.get_traced_memory()

        # Contrast: what keeping every listed sample would cost.
        gc.collect()
        held_before, _ = tracemalloc.get_traced_memory()
        held: list[SampleRef] = list(api.iter_samples(DATASET, LABELSET))
        gc.collect()
        held_after, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(held) == listed == count, (len(held), listed, count)
        del held
        api.close()
        return Measurement(
            count=count,
            listed=listed,
            seconds=seconds,
            traced_peak=traced_peak - traced_before,
            rss_peak=rss_peak,
            held_list=held_after - held_before,
        )
    finally:
        parent.send("stop")
        server.join(timeout=30)


def _measure_in_child(count: int, page_size: int, conn: Connection) -> None:
    conn.send(measure(count, page_size))


def measure_fresh(count: int, page_size: int) -> Measurement:
    """:func:`measure` in a new process, so no count's RSS is raised by another's arenas."""
    parent, child = mp.Pipe()
    process = mp.get_context("spawn").Process(
        target=_measure_in_child, args=(count, page_size, child)
    )
    process.start()
    result: Measurement = parent.recv()
    process.join(timeout=60)
    return result


def _mib(value: int) -> str:
    return f"{value / 2**20:8.2f} MiB"


def _ratio(a: int, b: int) -> str:
    return f"{a / b:6.2f}x" if b > 0 else "   n/a"


def _rows(results: list[Measurement]) -> Iterator[str]:
    yield (
        f"{'samples':>8}  {'samples/s':>10}  {'listing peak (tracemalloc)':>27}  "
        f"{'listing peak (RSS)':>19}  {'if held in a list':>18}"
    )
    for r in results:
        yield (
            f"{r.count:>8,}  {r.per_second:>10,.0f}  {_mib(r.traced_peak):>27}  "
            f"{_mib(r.rss_peak):>19}  {_mib(r.held_list):>18}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--page-size", type=int, default=RemoteSettings().page_size)
    args = parser.parse_args()

    results = [measure_fresh(count, args.page_size) for count in args.counts]
    print(f"iter_samples through the SDK, page size {args.page_size}, emulator in a child process")
    for row in _rows(results):
        print(row)
    small, large = results[0], results[-1]
    print(
        f"ratio {large.count:,} / {small.count:,} samples: "
        f"tracemalloc peak {_ratio(large.traced_peak, small.traced_peak)}, "
        f"RSS peak {_ratio(large.rss_peak, small.rss_peak)}, "
        f"held list {_ratio(large.held_list, small.held_list)} (for contrast)"
    )


if __name__ == "__main__":
    main()
