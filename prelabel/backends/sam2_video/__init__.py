"""SAM 2 video: the tracker that carries image-sequence tracks between keyframes, whatever
back-end predicts the keyframes. A package of its own because it holds model classes (only it
imports transformers' Sam2Video classes); the sequence driver (:mod:`prelabel.pipeline.sequence`)
uses it through :class:`~prelabel.pipeline.tracks.Tracker`.
"""
