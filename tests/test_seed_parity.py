"""prelabel's ``stuff_method: seed`` against the reference port of the seed demo, tiny models.

The port (``tests/reference/seed_panoptic.py``) is separate code written from the seed's
description; it takes prelabel's kept thing pixels as its things. Two measured properties of
the tiny random models decide which cases can be compared at all:

- Their CLIPSeg map is speckled: a 20-pixel erosion (the seed's default) erases every region,
  so nothing would be prompted and both maps would be empty. The cases use kernels of 0 and 2,
  and every case asserts that the maps compared hold stuff and that SAM was prompted.
- The port is not stable everywhere: 1e-5 of noise on its CLIPSeg probabilities flips a few
  coarse pixels, which moves the probability-weighted point draw, which changes SAM's maps by
  0.01-0.1, and where two categories' SAM maps are that close the argmax flips (measured
  stability 0.42-1.0; with noise on SAM's maps alone it stays above 0.999). A comparison is only
  meaningful where the port agrees with itself, so each case first checks the port's stability
  (``benchmarks/seed_parity.py`` prints it for a wider grid) and then requires 99% agreement.
"""

from __future__ import annotations

import pytest

from prelabel.backends.grounded_sam.backend import GroundedSam
from prelabel.config import PipelineSettings
from prelabel.pipeline.pipeline import Pipeline
from prelabel.taxonomy import Category, build_taxonomy
from tests.fixtures.images import noise_image
from tests.reference.parity import measure

pytestmark = pytest.mark.slow

THINGS = [Category(100, "person", True), Category(101, "car", True)]
STUFF = ["sky", "road", "grass", "tree", "building"]

#: (things?, stuff categories, background threshold, shrink kernel, width, height, image seed),
#: chosen from the benchmark's grid where the port is stable; landscape and portrait.
CASES = [
    pytest.param(False, 2, 0.5, 2, 96, 64, 1, id="stuff2-bg.5-k2-96x64"),
    pytest.param(False, 3, 0.5, 2, 64, 96, 0, id="stuff3-bg.5-k2-64x96"),
    pytest.param(False, 3, 0.1, 2, 64, 96, 0, id="stuff3-bg.1-k2-64x96"),
    pytest.param(False, 5, 0.5, 2, 120, 90, 2, id="stuff5-bg.5-k2-120x90"),
    pytest.param(True, 2, 0.1, 0, 96, 64, 1, id="things-stuff2-bg.1-k0-96x64"),
    pytest.param(True, 2, 0.5, 2, 64, 96, 2, id="things-stuff2-bg.5-k2-64x96"),
    pytest.param(True, 2, 0.5, 0, 64, 96, 5, id="things-stuff2-bg.5-k0-64x96"),
]


@pytest.mark.parametrize(("things", "count", "background", "kernel", "w", "h", "seed"), CASES)
def test_seed_method_agrees_with_the_reference_port(
    tiny_models: object,
    things: bool,
    count: int,
    background: float,
    kernel: int,
    w: int,
    h: int,
    seed: int,
) -> None:
    settings = PipelineSettings(
        background_threshold=background, shrink_kernel=kernel, min_area=0, max_detections=1
    )
    categories = (THINGS if things else []) + [
        Category(i + 1, name) for i, name in enumerate(STUFF[:count])
    ]
    taxonomy = build_taxonomy(categories, {}, settings)
    result = measure(
        Pipeline(GroundedSam(tiny_models), settings), noise_image(w, h, seed, high=255), taxonomy
    )

    assert result.compared > 0 and result.ours_stuff > 0 and result.port_stuff > 0
    assert result.prompted >= 1
    assert (result.thing_pixels > 0) == things
    assert result.stability >= 0.99, (
        f"the port is unstable here ({result.stability:.4f}): pick another case from "
        "benchmarks/seed_parity.py"
    )
    assert result.agreement >= 0.99, result.as_dict()
