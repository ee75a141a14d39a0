"""Backend-neutral pipeline: a model back-end's candidates -> one panoptic map per image or
frame (merge, box rules, stage clock, tracks and the sequence driver)."""
