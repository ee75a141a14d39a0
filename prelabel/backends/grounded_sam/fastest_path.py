"""Which of two exact implementations a step takes: the host libraries' or the tensor ops'.

Some steps are written twice, with the same output bit for bit:

- the models' preprocessing resize (Pillow's ``Image.resize``, or :mod:`.pil_resize`'s integer
  tensor passes) and its normalisation (a lookup in a table of the 256 levels with
  ``numpy.take``, or the arithmetic in place);
- the stuff branch's argmaxes over probability maps (numpy one map at a time, or one
  ``torch.max`` per chunk), its label counts and sums (``numpy.bincount`` or
  ``torch.bincount``) and the search for a region's pixels (``numpy.flatnonzero`` or
  ``torch.nonzero``).

The stuff branch's erosion (:func:`.stuff_seed.erode_labels`) is written once, in bool tensor
operations that are fast everywhere.

The tensor forms exist for accelerators: there they run where the data already is, in
milliseconds, and the host stays free. On a CPU device the device's memory is host memory, so
the tensor form saves no copy, and the host libraries' own vectorised C code is the faster
exact path (the three preprocessing resizes of a 1920x1080 image: about 0.3 s as integer
tensor passes, about 70 ms in Pillow; an argmax over 5 maps of 1280x720: about 20 ms as
``torch.max``, 8 ms in numpy; one thread of the 2-core development CPU).

:func:`use_host_libraries` is that one decision, from the torch device. :func:`tensor_paths`
overrides it for a block of code, so that the tensor forms can be run and timed on a CPU:
``benchmarks/host_overhead.py`` measures the host work of the path a GPU takes with it, and the
tests compare both forms with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

_FORCE_TENSORS: ContextVar[bool] = ContextVar("prelabel_force_tensor_paths", default=False)


def use_host_libraries(device: torch.device) -> bool:
    """Whether a step whose tensors live on ``device`` runs in Pillow/numpy on host memory
    (a CPU device, unless :func:`tensor_paths` is on) rather than as tensor operations."""
    return device.type == "cpu" and not _FORCE_TENSORS.get()


@contextmanager
def tensor_paths() -> Iterator[None]:
    """Within the block (this thread or task), every device takes the tensor forms, as an
    accelerator does: for measuring and testing that path on a CPU."""
    token = _FORCE_TENSORS.set(True)
    try:
        yield
    finally:
        _FORCE_TENSORS.reset(token)
