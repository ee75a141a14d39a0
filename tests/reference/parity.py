"""Compare prelabel's ``stuff_method: seed`` with the reference port, pixel by pixel.

Shared by ``tests/test_seed_parity.py`` and ``benchmarks/seed_parity.py``. For one image:

- prelabel predicts (things and stuff) with ``min_area=0``, so no segment is dropped for size;
- the port runs on the same working image with the same knobs and takes prelabel's kept thing
  pixels as its things, so both stuff branches see the same things;
- the port runs a second time with ``noise`` added to its probabilities: how often a pixel keeps
  its category under that noise is the port's own **stability**, the best agreement anybody can
  expect from a second implementation with float differences of that size;
- **agreement** is the share of non-thing pixels where prelabel's stuff category equals the
  port's (thing pixels agree by construction and are left out).

With ``split=True`` the stability is also measured with the noise on one model's maps only
(CLIPSeg's, then SAM's), which tells where the instability comes from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from prelabel.panoptic import PanopticPrediction
from prelabel.pipeline.pipeline import Pipeline
from prelabel.taxonomy import Taxonomy
from tests.reference.seed_panoptic import SeedKnobs, SeedStuff, seed_stuff

#: Noise amplitude for the stability measurement (issue 16: flips at differences of 1e-5).
NOISE = 1e-5


@dataclass(frozen=True)
class Parity:
    """Agreement and stability over ``compared`` non-thing pixels of one image."""

    agreement: float
    stability: float
    compared: int
    #: Non-thing pixels with a stuff category, in prelabel's map and in the port's.
    ours_stuff: int
    port_stuff: int
    #: Stuff categories that got SAM points in the port.
    prompted: int
    thing_pixels: int
    #: With ``split=True``: stability with noise on CLIPSeg's maps only, on SAM's only.
    stability_clipseg: float | None = None
    stability_sam: float | None = None

    def as_dict(self) -> dict[str, float | int | None]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 6)

        return {
            "agreement": round(self.agreement, 6),
            "stability": round(self.stability, 6),
            "stability_clipseg": rounded(self.stability_clipseg),
            "stability_sam": rounded(self.stability_sam),
            "compared": self.compared,
            "ours_stuff": self.ours_stuff,
            "port_stuff": self.port_stuff,
            "prompted": self.prompted,
            "thing_pixels": self.thing_pixels,
        }


def stuff_category_map(prediction: PanopticPrediction) -> npt.NDArray[np.int64]:
    """Stuff category id per pixel of a prediction, 0 elsewhere."""
    lookup = np.zeros(int(prediction.id_map.max()) + 1, dtype=np.int64)
    for segment in prediction.segments:
        if not segment.is_thing:
            lookup[segment.id] = segment.category_id
    return lookup[prediction.id_map]


def thing_pixels(prediction: PanopticPrediction) -> npt.NDArray[np.bool_]:
    """Pixels of the kept things: with ``min_area=0`` the union of every thing mask."""
    ids = [s.id for s in prediction.segments if s.is_thing]
    return np.isin(prediction.id_map, ids)


def run_port(
    pipeline: Pipeline,
    image: Image.Image,
    taxonomy: Taxonomy,
    things: npt.NDArray[np.bool_] | None,
    *,
    noise: float = 0.0,
    noise_on: frozenset[str] = frozenset({"clipseg", "sam"}),
) -> SeedStuff:
    """The reference port on ``image`` with ``pipeline``'s models and knobs."""
    settings = pipeline.settings
    models = pipeline.backend.models
    return seed_stuff(
        image,
        [(p.category_id, p.phrases[0]) for p in taxonomy.stuff],
        things,
        clipseg=models.clipseg,
        clipseg_processor=models.clipseg_processor,
        sam=models.sam,
        sam_processor=models.sam_processor,
        knobs=SeedKnobs(
            background_threshold=settings.background_threshold,
            shrink_kernel=settings.shrink_kernel,
            num_samples_factor=settings.num_samples_factor,
            seed=settings.seed,
        ),
        noise=noise,
        noise_on=noise_on,
    )


def measure(
    pipeline: Pipeline, image: Image.Image, taxonomy: Taxonomy, *, split: bool = False
) -> Parity:
    """Agreement of prelabel with the port and the port's stability, on one image.

    The image must fit ``max_image_side`` (the port sees it as given) and every stuff
    category must have a single phrase (the demo prompts with the category name only).
    """
    settings = pipeline.settings
    if max(image.size) > settings.max_image_side or settings.min_area != 0:
        raise ValueError("parity needs an image within max_image_side and min_area=0")
    if any(len(p.phrases) != 1 for p in taxonomy.stuff):
        raise ValueError("parity needs one phrase per stuff category, as the demo uses")
    prediction = pipeline.predict(image, taxonomy)
    things = thing_pixels(prediction)
    free = ~things
    ours = stuff_category_map(prediction)[free]
    carved = things if things.any() else None
    clean = run_port(pipeline, image, taxonomy, carved)
    port = clean.category_map[free]
    compared = int(free.sum())

    def stability(noise_on: frozenset[str]) -> float:
        noisy = run_port(pipeline, image, taxonomy, carved, noise=NOISE, noise_on=noise_on)
        return float((noisy.category_map[free] == port).mean()) if compared else 0.0

    return Parity(
        agreement=float((ours == port).mean()) if compared else 0.0,
        stability=stability(frozenset({"clipseg", "sam"})),
        stability_clipseg=stability(frozenset({"clipseg"})) if split else None,
        stability_sam=stability(frozenset({"sam"})) if split else None,
        compared=compared,
        ours_stuff=int((ours > 0).sum()),
        port_stuff=int((port > 0).sum()),
        prompted=sum(1 for n in clean.points.values() if n > 0),
        thing_pixels=int(things.sum()),
    )
