"""``prelabel serve``: pre-label on Segments.ai webhooks, with the sync cycle as a safety net.

Modules, in the order a delivery meets them: :mod:`~prelabel.serve.app` (HTTP routes),
:mod:`~prelabel.serve.intake` (one delivery to one answer), :mod:`~prelabel.serve.webhooks`
(Svix verification, event parsing), :mod:`~prelabel.serve.dedup` (message ids in the state
file), :mod:`~prelabel.serve.work_queue`, :mod:`~prelabel.serve.service` (threads, readiness,
draining), :mod:`~prelabel.serve.lifecycle` (the seam to the per-sample lifecycle) and
:mod:`~prelabel.serve.adapter` (that seam over :mod:`prelabel.run`); :mod:`~prelabel.serve.metrics`
and :mod:`~prelabel.serve.server` (uvicorn, signals) around them.
"""
