"""Weight tools behind ``prelabel models``: the tiny random models of every back-end.

Each back-end builds its own tiny models (only a back-end imports its model classes); this
package seeds them, saves them in the ``--models DIR`` layout and marks them as tiny.
The SAM checkpoint converter is the grounded_sam back-end's
(:mod:`prelabel.backends.grounded_sam.convert_sam`).
"""
