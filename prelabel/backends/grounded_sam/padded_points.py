"""Several point prompts of different lengths in one SAM decoder call, each decoded as if alone.

The seed's stuff method prompts SAM once per stuff category with that category's own number of
points (up to ``num_samples_factor``). To send many categories in one call their point lists
are padded to the longest with SAM's padding label (-10, a zero token). A zero token is not
nothing, though: in the mask decoder's token self-attention and in its image-to-token
attention it is still a key that takes a share of the softmax. So while such a call runs, a
forward pre-hook on exactly those attention layers hands them an additive mask that is
``-inf`` on the padded tokens' keys: each prompt then sees the same keys as in a call of its
own (up to the order of float sums). The token-to-image layers have no padded keys and get
nothing.

The hooks are installed once per model and read the mask from a context variable, so calls
without padding (boxes, the ``regions`` method) and other threads are untouched.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

#: SAM's label for a padding point: the prompt encoder gives it a zero embedding.
PAD_LABEL = -10
#: Tokens the mask decoder puts before the prompt's: the IoU token and four mask tokens.
_OUTPUT_TOKENS = 5

_KEY_MASK: ContextVar[torch.Tensor | None] = ContextVar("sam_point_key_mask", default=None)
_HOOKED = "_prelabel_padded_points"


def pad_point_sets(
    point_sets: Sequence[npt.NDArray[np.floating]],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """``(M, K, 2)`` x/y and ``(M, K)`` labels: 1 for each given point, :data:`PAD_LABEL` after
    a set's own points up to the longest set's ``K``."""
    longest = max(len(points) for points in point_sets)
    points = np.zeros((len(point_sets), longest, 2), dtype=np.float32)
    labels = np.full((len(point_sets), longest), PAD_LABEL, dtype=np.int64)
    for row, given in enumerate(point_sets):
        points[row, : len(given)] = given
        labels[row, : len(given)] = 1
    return points, labels


def install(model: torch.nn.Module) -> bool:
    """Hook the key-masking into a transformers ``SamModel`` once; False for anything without
    SAM's two-way transformer (a test stand-in), which must then read :data:`PAD_LABEL` itself."""
    transformer = getattr(getattr(model, "mask_decoder", None), "transformer", None)
    layers = getattr(transformer, "layers", None)
    if layers is None:
        return False
    if getattr(model, _HOOKED, False):
        return True
    for layer in layers:
        for attention in (layer.self_attn, layer.cross_attn_image_to_token):
            attention.register_forward_pre_hook(_mask_token_keys, with_kwargs=True)
    setattr(model, _HOOKED, True)
    return True


@contextmanager
def masked_padding(labels: torch.Tensor) -> Iterator[None]:
    """While open, the hooked attention layers ignore the keys of ``labels == PAD_LABEL``.

    ``labels`` is ``(M, K)`` on the model's device; tokens are ``[5 output tokens, K points,
    SAM's own not-a-point]``, so the mask is ``(M, 1, 1, 5 + K + 1)``.
    """
    pad = labels == PAD_LABEL
    keep = torch.zeros(len(labels), _OUTPUT_TOKENS, dtype=torch.bool, device=labels.device)
    tail = torch.zeros(len(labels), 1, dtype=torch.bool, device=labels.device)
    padded = torch.cat([keep, pad, tail], dim=1)
    mask = torch.zeros(padded.shape, dtype=torch.float32, device=labels.device)
    mask = mask.masked_fill(padded, -torch.inf)[:, None, None, :]
    token = _KEY_MASK.set(mask)
    try:
        yield
    finally:
        _KEY_MASK.reset(token)


def _mask_token_keys(
    module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """Forward pre-hook of a ``SamAttention`` whose keys are the prompt tokens."""
    mask = _KEY_MASK.get()
    if mask is None:
        return None
    key = kwargs.get("key", args[1] if len(args) > 1 else None)
    if key is None or key.shape[-2] != mask.shape[-1]:
        raise RuntimeError("padded point prompts: the attention's keys are not the tokens")
    return args, {**kwargs, "attention_similarity": mask.to(key.dtype)}
