"""A self-contained try-out: an emulator with a seeded street-scene dataset, and tiny models.

``prelabel demo`` and the review notebook (when no real dataset is configured, which is how CI
runs it) start here. The images are drawn by :mod:`prelabel.emulator.scenes`, so nothing is
downloaded and nothing carries a licence. The last ``labeled`` samples get their scene's exact
ground truth as a person's label (status LABELED): a run leaves them alone, as it would a
person's work, and evaluation has something to score against. Emulator code, so nothing in
the connector or pipeline imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prelabel.config import shipped_config
from prelabel.emulator.scenes import SCENE_CATEGORIES, street_scene
from prelabel.emulator.seed import load_categories, seed_dataset
from prelabel.emulator.server import Emulator
from prelabel.formats.bitmap import segmentation_png
from prelabel.formats.label import label_attributes

DEMO_KEY = "demo-key"
DEMO_DATASET = "jane/demo"
#: The labelset every label of the demo lives in.
DEMO_LABELSET = "ground-truth"


@dataclass
class Demo:
    """A running demo emulator and what was seeded into it."""

    emulator: Emulator
    url: str
    api_key: str
    dataset: str
    models_dir: Path
    #: Where the scenes were saved, one PNG per sample, named like the sample.
    images_dir: Path
    #: Samples in listing order; those in ``labeled_uuids`` carry a person's label.
    sample_uuids: tuple[str, ...] = ()
    labeled_uuids: tuple[str, ...] = ()
    #: The dataset's categories as Segments stores them.
    categories: tuple[dict[str, Any], ...] = ()

    def stop(self) -> None:
        self.emulator.stop()


def start_demo(
    workdir: Path, *, images: int = 4, labeled: int = 2, models_dir: Path | None = None
) -> Demo:
    """Start an emulator on a free port with ``images + labeled`` street scenes.

    ``images`` samples are unlabeled, the ``labeled`` after them carry their ground truth as a
    LABELED label. The categories are those of ``configs/street-scene-categories.yaml`` that a
    scene paints (ids, names and colours as in that file). Scenes go to ``workdir/images``;
    tiny random-weight models are written to ``workdir/tiny-models`` (once) unless
    ``models_dir`` is given.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    images_dir = workdir / "images"
    images_dir.mkdir(exist_ok=True)
    shipped = load_categories(categories_file())
    categories = [c for c in shipped if c["name"] in SCENE_CATEGORIES]
    ids = {c["name"]: c["id"] for c in categories}
    scenes = [street_scene(seed, ids) for seed in range(images + labeled)]
    paths = []
    for seed, scene in enumerate(scenes):
        paths.append(images_dir / f"street-{seed:02d}.png")
        scene.image.save(paths[-1])
    emulator = Emulator(DEMO_KEY).start()
    try:
        seeded = seed_dataset(emulator, DEMO_DATASET, paths, categories)
        for uuid, scene in zip(seeded.sample_uuids[images:], scenes[images:], strict=True):
            url = emulator.add_asset(segmentation_png(scene.id_map), f"truth-{uuid}.png")
            annotations = [{"id": i, "category_id": c} for i, c in scene.annotations.items()]
            emulator.write_label(uuid, DEMO_LABELSET, label_attributes(annotations, url))
        if models_dir is None:
            models_dir = _tiny_models(workdir / "tiny-models")
    except BaseException:
        emulator.stop()
        raise
    return Demo(
        emulator,
        emulator.url,
        DEMO_KEY,
        DEMO_DATASET,
        models_dir,
        images_dir,
        sample_uuids=seeded.sample_uuids,
        labeled_uuids=seeded.sample_uuids[images:],
        categories=seeded.categories,
    )


def _tiny_models(folder: Path) -> Path:
    """Tiny random-weight models in ``folder``, written once (about a second) and kept."""
    from prelabel.weights.tiny import has_tiny_models, write_tiny_models

    if not has_tiny_models(folder):
        write_tiny_models(folder)
    return folder


def categories_file() -> Path:
    """The taxonomy file the demo's categories (and their prompts) come from."""
    return shipped_config("street-scene-categories.yaml")
