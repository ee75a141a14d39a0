"""The panoptic merge's input checks: what :func:`~prelabel.pipeline.merge.merge_panoptic`
refuses, and why, with messages that name the candidate at fault.

Kept apart from the merge so that the merge reads as its rules; pure numpy like it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from prelabel.panoptic import MAX_SEGMENT_ID, MaskCandidate

__all__ = ["check_candidates", "check_ids"]


def check_candidates(
    candidates: Sequence[MaskCandidate], output_size: tuple[int, int] | None
) -> tuple[int, int]:
    """Validate inputs; return the common working shape ``(H, W)`` (or the output's if none)."""
    if output_size is not None and not _is_size(output_size):
        raise ValueError(
            f"output_size must be (width, height) with positive integers, got {output_size!r}"
        )
    if not candidates:
        if output_size is None:
            raise ValueError("no candidates and no output_size: the map's size is unknown")
        return int(output_size[1]), int(output_size[0])
    expected: tuple[int, ...] = ()
    for i, cand in enumerate(candidates):
        mask = cand.mask
        if mask.ndim != 2 or mask.dtype != np.bool_:
            raise ValueError(
                f"candidate {i}: mask must be a 2-D bool array, got {mask.ndim}-D {mask.dtype}"
            )
        _check_crop(i, cand)
        shape = tuple(cand.frame_shape)
        if i == 0:
            expected = shape
        elif shape != expected:
            what = "mask shape" if cand.frame is None else "frame"
            raise ValueError(
                f"candidate {i}: {what} {shape} differs from the first candidate's "
                f"{expected}; all masks must share the working resolution"
            )
        if not np.isfinite(cand.score):
            raise ValueError(f"candidate {i}: score must be finite, got {cand.score}")
    if 0 in expected:
        raise ValueError(f"masks have an empty shape {expected}")
    return int(expected[0]), int(expected[1])


def _check_crop(index: int, cand: MaskCandidate) -> None:
    """A cropped mask lies inside its frame; a full-size one has no origin."""
    top, left = cand.origin
    if cand.frame is None:
        if (top, left) != (0, 0):
            raise ValueError(
                f"candidate {index}: origin {cand.origin} without a frame; a full-size mask "
                "starts at (0, 0)"
            )
        return
    height, width = cand.mask.shape
    frame_h, frame_w = cand.frame
    if not (0 <= top <= frame_h - height and 0 <= left <= frame_w - width):
        raise ValueError(
            f"candidate {index}: crop of shape {cand.mask.shape} at origin {cand.origin} "
            f"does not fit its frame {cand.frame}"
        )


def _is_size(value: object) -> bool:
    return (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) and v > 0 for v in value
        )
    )


def check_ids(
    candidates: Sequence[MaskCandidate], segment_ids: Sequence[int] | None
) -> tuple[dict[int, int], dict[int, int]] | None:
    """Given ids by thing candidate index, and by stuff category id; None when not given."""
    if segment_ids is None:
        return None
    if len(segment_ids) != len(candidates):
        raise ValueError(f"{len(segment_ids)} segment ids for {len(candidates)} candidates")
    things: dict[int, int] = {}
    stuff: dict[int, int] = {}
    for index, (cand, seg_id) in enumerate(zip(candidates, segment_ids, strict=True)):
        if not 1 <= seg_id <= MAX_SEGMENT_ID:
            raise ValueError(f"segment id {seg_id} is outside 1..{MAX_SEGMENT_ID}")
        if cand.is_thing:
            things[index] = int(seg_id)
        elif stuff.setdefault(cand.category_id, int(seg_id)) != seg_id:
            raise ValueError(f"stuff category {cand.category_id} has two segment ids")
    used = list(things.values()) + list(stuff.values())
    if len(set(used)) != len(used):
        raise ValueError("segment ids must be unique (one per thing, one per stuff category)")
    return things, stuff
