"""Review in a notebook: look at predictions, tune, measure, push the accepted ones, save.

:class:`ReviewSession` (:mod:`prelabel.review.session`) does the work and needs nothing but
prelabel; :class:`prelabel.review.widgets.ReviewApp` is the ipywidgets UI over it
(``pip install 'prelabel[notebook]'``), imported from its module so that the session works
without ipywidgets. This is the only package that draws on screen; ``formats.overlay`` draws
the images.
"""

from prelabel.review.items import ReviewItem, render_table
from prelabel.review.session import ReviewSession

__all__ = ["ReviewItem", "ReviewSession", "render_table"]
