"""Per-stage timings for benchmarks, free when nobody asks for them."""

from __future__ import annotations

import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager

import torch

Timings = MutableMapping[str, float]


class StageClock:
    """Adds stage durations into an optional mapping; free when none is given.

    On CUDA kernels run asynchronously: without a synchronize at each boundary a stage whose
    result stays on the GPU (the SAM embedding) would be charged to the next stage that copies
    to the CPU. It only synchronizes when timings are asked for.
    """

    def __init__(self, timings: Timings | None, cuda: torch.device | None = None) -> None:
        self.timings = timings
        self.cuda = cuda

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        if self.timings is None:
            yield
            return
        self._sync()
        start = time.perf_counter()
        try:
            yield
            self._sync()
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start

    def _sync(self) -> None:
        if self.cuda is not None:
            torch.cuda.synchronize(self.cuda)
