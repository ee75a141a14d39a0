"""Non-finite model outputs are an error that names the model and its dtype.

A NaN does not crash anything downstream: ``NaN > 0`` is False, so NaN mask logits become empty
masks, NaN boxes become empty SAM prompts, and the merge drops segments without pixels. A model
that overflows in half precision would therefore produce empty labels, one image after another,
with nothing in the log. Every model output the pipeline reads passes through
:func:`require_finite` first, so that case stops with a message that says what to change.
"""

from __future__ import annotations

import torch

from prelabel.backends.loading import MODEL_TITLES
from prelabel.errors import NonFiniteOutputError

__all__ = ["NonFiniteOutputError", "require_finite"]


def require_finite(role: str, model: torch.nn.Module, **outputs: torch.Tensor) -> None:
    """Raise :class:`NonFiniteOutputError` if any of ``outputs`` holds a NaN or an infinity.

    ``role`` is the model's key in :data:`~prelabel.backends.loading.MODEL_TITLES`; the message
    names the model, the output, its dtype and the setting that changes it. The check costs one
    sum per tensor (and, on a GPU, the synchronisation the next copy to the CPU makes anyway):
    a NaN or an infinity anywhere makes the sum non-finite, so a finite sum clears the tensor
    without the elementwise test's full-size boolean copy (a third of the time on a CPU). Only a
    sum that overflows, all values finite, takes the elementwise test.
    """
    for name, tensor in outputs.items():
        if bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all()):
            continue
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        bad = int((~torch.isfinite(tensor)).sum())
        advice = (
            f"set models.dtype.{role}: float32 in the config"
            if dtype != "float32"
            else "the weights may be damaged; re-download or re-convert them"
        )
        raise NonFiniteOutputError(
            f"{MODEL_TITLES[role]} ({dtype}) returned {bad} non-finite value(s) in its {name} "
            f"of {tuple(tensor.shape)}; refusing to turn them into empty masks: {advice}"
        )
