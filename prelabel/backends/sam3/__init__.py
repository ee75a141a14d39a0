"""SAM 3 alone makes the panoptic label: text prompts give instance masks (things) and the
semantic head gives stuff.

Modules, lowest first: :mod:`.loading` (weights, tokenizer, device and dtype),
:mod:`.processing` (pre- and post-processing written here, because transformers'
``Sam3ImageProcessor`` needs torchvision), :mod:`.predictor` (one vision pass per image, cached
text embeddings, prompts in batches of K), :mod:`.candidates` (pure functions from predictions to
:class:`~prelabel.panoptic.MaskCandidate`), and :mod:`.tiny` (a tiny random SAM 3 for tests).
Nothing here reads the project's settings: the back-end adapter passes plain arguments.
"""
