"""Thing masks between SAM and the merge: on the model's device until the merge needs them.

A thing is usually small, but SAM's box masks come out full-size: 20 boxes of a 1920x1080 image
are 40 MB of booleans. Copying them all to host memory, OR-ing them there for the stuff branch
and scanning each whole mask in the merge was most of the host's work for things. So each
upscaled chunk of masks is measured on the device (which rows and columns hold a pixel), only
each mask's tight window comes to host memory (:func:`crop_to_windows`, a
:class:`~prelabel.panoptic.MaskCandidate` with ``origin`` and ``frame``), and the union of the
things that the seed stuff method removes from stuff is rebuilt on the device from those crops
(:func:`device_union`): small copies back, never a full-size host mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch

from prelabel.panoptic import MaskCandidate

__all__ = ["crop_to_windows", "device_union"]

#: A crop in host memory and the ``(row, column)`` of its top-left pixel in the image.
Crop = tuple[npt.NDArray[np.bool_], tuple[int, int]]


def crop_to_windows(masks: torch.Tensor) -> list[Crop]:
    """``(N, H, W)`` bool masks on any device -> each mask's tight window, in host memory.

    Two copies to the host whatever ``N``: the masks' row and column flags (``N x (H + W)``
    booleans), then all crops at once, flattened and joined on the device. An empty mask gives
    a ``(0, 0)`` crop at ``(0, 0)``.
    """
    count, height, _ = masks.shape
    if count == 0:
        return []
    # The maximum of the bytes, not ``any``: the same flags, and on a CPU device ten times as
    # fast (``any`` along an axis of a bool tensor is not vectorised there).
    as_bytes = masks.view(torch.uint8)
    flags = torch.cat([as_bytes.amax(dim=2), as_bytes.amax(dim=1)], dim=1).cpu().numpy()
    windows: list[tuple[int, int, int, int] | None] = []
    for row_flags, col_flags in zip(flags[:, :height], flags[:, height:], strict=True):
        rows, cols = np.flatnonzero(row_flags), np.flatnonzero(col_flags)
        if rows.size == 0:
            windows.append(None)
        else:
            windows.append((int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1))
    pieces = [
        masks[index, w[0] : w[1], w[2] : w[3]].reshape(-1)
        for index, w in enumerate(windows)
        if w is not None
    ]
    flat = torch.cat(pieces).cpu().numpy() if pieces else np.zeros(0, dtype=np.bool_)
    crops: list[Crop] = []
    offset = 0
    for w in windows:
        if w is None:
            crops.append((np.zeros((0, 0), dtype=np.bool_), (0, 0)))
            continue
        shape = (w[1] - w[0], w[3] - w[2])
        size = shape[0] * shape[1]
        crops.append((flat[offset : offset + size].reshape(shape), (w[0], w[2])))
        offset += size
    return crops


def device_union(
    things: Sequence[MaskCandidate], size: tuple[int, int], device: torch.device
) -> torch.Tensor | None:
    """The union of ``things``' masks, ``size`` ``(H, W)`` bool on ``device``; None when there
    is no thing. Each mask goes back to the device at its crop's size (a full-size one, such as
    a tracked object's, at full size: it is all there is)."""
    if not things:
        return None
    union = torch.zeros(size, dtype=torch.bool, device=device)
    for thing in things:
        if thing.frame_shape != size:
            raise ValueError(
                f"a thing mask of frame {thing.frame_shape} for an image of size {size}"
            )
        if thing.mask.size:
            union[thing.window] |= torch.from_numpy(thing.mask).to(device)
    return union
