"""A self-contained try-out: an emulator with a seeded dataset, and tiny models.

The review notebook uses it when no real dataset is configured, and CI runs the notebook that
way. Emulator code, so nothing in the connector or pipeline imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from prelabel.emulator.seed import load_categories, seed_dataset
from prelabel.emulator.server import Emulator

DEMO_KEY = "demo-key"
DEMO_DATASET = "jane/demo"


@dataclass
class Demo:
    emulator: Emulator
    url: str
    api_key: str
    dataset: str
    models_dir: Path

    def stop(self) -> None:
        self.emulator.stop()


def start_demo(workdir: Path, *, images: int = 4, categories: Path | None = None) -> Demo:
    """Start an emulator on a free port with ``images`` synthetic street-like pictures.

    ``categories`` defaults to the street-scene taxonomy shipped in ``configs/``.
    """
    from prelabel.pipeline.tiny import write_tiny_models

    workdir.mkdir(parents=True, exist_ok=True)
    paths = [_synthetic_image(workdir / f"street-{i:02d}.png", seed=i) for i in range(images)]
    emulator = Emulator(DEMO_KEY).start()
    taxonomy_file = categories or _shipped("street-scene-categories.yaml")
    seed_dataset(emulator, DEMO_DATASET, paths, load_categories(taxonomy_file))
    models_dir = workdir / "tiny-models"
    if not models_dir.is_dir():
        write_tiny_models(models_dir)
    return Demo(emulator, emulator.url, DEMO_KEY, DEMO_DATASET, models_dir)


def _shipped(name: str) -> Path:
    path = Path(__file__).resolve().parents[2] / "configs" / name
    if not path.is_file():
        raise FileNotFoundError(f"{name} not found next to the package; pass categories=")
    return path


def _synthetic_image(path: Path, *, seed: int, size: tuple[int, int] = (160, 96)) -> Path:
    """Sky above, road below, a few boxes between: something an overlay can be seen on."""
    rng = np.random.default_rng(seed)
    width, height = size
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    horizon = height // 2 + int(rng.integers(-8, 8))
    pixels[:horizon] = (110, 160, 220)
    pixels[horizon:] = (90, 90, 95)
    for _ in range(3):
        x, y = int(rng.integers(0, width - 30)), int(rng.integers(horizon - 20, height - 20))
        pixels[y : y + 20, x : x + 30] = rng.integers(0, 255, 3)
    noise = rng.integers(0, 12, pixels.shape, dtype=np.uint8)
    Image.fromarray(pixels + noise).save(path)
    return path
