"""The zero-shot pipeline: Grounding DINO, SAM and CLIPSeg behind one predict call."""
