"""Model back-ends: each package turns images and a taxonomy into mask candidates.

(Placeholder so ``prelabel.backends.sam3`` imports; the seam's registry and ``load_backend``
replace this module at merge.)
"""
