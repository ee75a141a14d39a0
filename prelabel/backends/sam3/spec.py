"""What the ``sam3`` back-end is and can do (no torch: read by config checks)."""

from __future__ import annotations

from prelabel.backends.base import BackendSpec

SPEC = BackendSpec(
    name="sam3",
    description="SAM 3 alone: text-prompted instances for things, its semantic map for stuff",
    batching=True,
    model_roles=("sam3",),
    category_options=frozenset({"score_threshold"}),
    # SAM 3's CLIP text encoder positions; each phrase is its own prompt.
    max_text_tokens=32,
)
