"""``Pipeline.predict(image, taxonomy) -> PanopticPrediction``: a model back-end's candidates
turned into a panoptic map, no I/O.

Order per image: the working image (RGB, downscaled to ``max_image_side``) -> the back-end's
session for it (its encoders run once per image, for a whole batch at a time) -> thing
candidates -> stuff candidates, told the thing candidates (whose masks a back-end may crop to
their windows) -> panoptic merge at the original size.
Which models find the candidates is the back-end's business (:mod:`prelabel.backends`); the
merge, the resize and the clock are the same for all. The back-end is loaded once and reused
for every image, and for every settings change (the review notebook's tuning).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from prelabel.backends import load_backend
from prelabel.backends.base import Backend
from prelabel.config import PipelineSettings, Settings
from prelabel.images import WorkingImage, fit_within
from prelabel.panoptic import PanopticPrediction
from prelabel.pipeline.clock import StageClock, Timings
from prelabel.pipeline.merge import merge_panoptic
from prelabel.pipeline.prompts import fit_prompts
from prelabel.taxonomy import Taxonomy


class Pipeline:
    """The zero-shot panoptic pipeline over an already-loaded back-end."""

    def __init__(self, backend: Backend, settings: PipelineSettings) -> None:
        self.backend = backend
        self.settings = settings
        self._fitted: tuple[Taxonomy, Taxonomy] | None = None

    @classmethod
    def load(cls, settings: Settings, models_dir: Path | None = None) -> Pipeline:
        """Load the configured back-end (see :func:`~prelabel.backends.load_backend`)."""
        return cls(load_backend(settings, models_dir), settings.pipeline)

    @property
    def is_tiny(self) -> bool:
        """True when a tiny random-weight model is in use: its masks are meaningless."""
        return self.backend.is_tiny

    def clock(self, timings: Timings | None) -> StageClock:
        """A stage clock that synchronises the back-end's CUDA device when timing."""
        device = self.backend.device
        return StageClock(timings, cuda=device if device.type == "cuda" else None)

    def fit(self, taxonomy: Taxonomy) -> Taxonomy:
        """``taxonomy`` with every phrase within its model's text limit
        (:func:`~prelabel.pipeline.prompts.fit_prompts`), remembered for the last taxonomy: a
        run asks with the same one for every image, and its warnings come once, before the first
        image reaches a model.

        Raises:
            PromptTooLongError: a phrase that cannot be cut to fit (ends the run).
        """
        if self._fitted is None or self._fitted[0] != taxonomy:
            self._fitted = (taxonomy, fit_prompts(taxonomy, self.backend.text_limits()))
        return self._fitted[1]

    def predict(
        self, image: Image.Image, taxonomy: Taxonomy, *, timings: Timings | None = None
    ) -> PanopticPrediction:
        """Panoptic map of an RGB image, at the image's own size.

        ``timings``, when given, accumulates seconds per stage (for grounded_sam ``detect``,
        ``embed``, ``things``, ``coarse``, ``stuff``, and ``merge``) for benchmarks.
        """
        (prediction,) = self.predict_batch([image], taxonomy, timings=timings)
        return prediction

    def predict_batch(
        self, images: Sequence[Image.Image], taxonomy: Taxonomy, *, timings: Timings | None = None
    ) -> list[PanopticPrediction]:
        """:meth:`predict` for several images, with the back-end's per-image encoders called
        once for all of them: what keeps a GPU busy. Same results as one image at a time."""
        taxonomy = self.fit(taxonomy)
        workings = [self.working_image(image) for image in images]
        clock = self.clock(timings)
        sessions = self.backend.open_batch(
            [w.image for w in workings], taxonomy, self.settings, clock
        )
        predictions = []
        for working, session in zip(workings, sessions, strict=True):
            candidates = session.things()
            if taxonomy.stuff:
                candidates.extend(session.stuff(tuple(candidates)))
            with clock("merge"):
                predictions.append(
                    merge_panoptic(
                        candidates,
                        min_area=self.settings.min_area,
                        output_size=working.original_size,
                    )
                )
        return predictions

    def working_image(self, image: Image.Image) -> WorkingImage:
        """The image the models see: RGB checked, downscaled to ``max_image_side``."""
        if image.mode != "RGB":
            raise ValueError(f"expected an RGB image, got mode {image.mode}; use decode_image()")
        return fit_within(image, self.settings.max_image_side)
