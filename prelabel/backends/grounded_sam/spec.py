"""What the ``grounded_sam`` back-end is and can do (no torch: read by config checks)."""

from __future__ import annotations

from prelabel.backends.base import BackendSpec

SPEC = BackendSpec(
    name="grounded_sam",
    description="Grounding DINO (or MM Grounding DINO, LLMDet) + SAM + CLIPSeg",
    batching=True,
    model_roles=("grounding_dino", "sam", "clipseg"),
    category_options=frozenset({"box_threshold", "text_threshold", "mask_threshold"}),
    # Grounding DINO's text length (config max_text_len); longer prompt lists are split.
    max_text_tokens=256,
)
