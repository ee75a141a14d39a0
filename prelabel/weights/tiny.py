"""``prelabel models tiny DIR``: every back-end's tiny random-weight models, in one folder.

One seeded stream for grounded_sam's Grounding DINO, SAM and CLIPSeg, then SAM 2 video, then
MM Grounding DINO, in that order, so the same seed gives the same weights, byte for byte, and a
model added later leaves the earlier ones' weights unchanged. SAM 3 (``sam3/``) is written by
its own :func:`~prelabel.backends.sam3.tiny.write_tiny_sam3` from the same seed (it writes a
processor file by hand, as ``Sam3Processor`` needs torchvision), so ``sam3/`` here equals
``write_tiny_sam3(DIR, seed)``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from prelabel.backends.grounded_sam.loading import MODEL_SUBDIRS
from prelabel.backends.grounded_sam.tiny import build_tiny_mm_grounding_dino, build_tiny_models
from prelabel.backends.loading import TINY_MARKER, is_tiny_model_dir, quiet_progress_bars
from prelabel.backends.sam2_video.loading import SAM2_VIDEO_SUBDIR
from prelabel.backends.sam2_video.tiny import build_tiny_sam2_video
from prelabel.backends.sam3.loading import SAM3_SUBDIR
from prelabel.backends.sam3.tiny import write_tiny_sam3

__all__ = [
    "MM_GROUNDING_DINO_SUBDIR",
    "TINY_SUBDIRS",
    "has_tiny_models",
    "is_tiny_models_dir",
    "write_tiny_models",
]

logger = logging.getLogger(__name__)

#: The tiny MM Grounding DINO's folder: not part of the grounded_sam layout (``models.
#: grounding_dino`` names it when wanted).
MM_GROUNDING_DINO_SUBDIR = "mm_grounding_dino"

#: Every subdirectory :func:`write_tiny_models` writes.
TINY_SUBDIRS = (
    *MODEL_SUBDIRS.values(),
    SAM2_VIDEO_SUBDIR,
    MM_GROUNDING_DINO_SUBDIR,
    SAM3_SUBDIR,
)


def write_tiny_models(out_dir: Path, seed: int = 0) -> Path:
    """Write the tiny models (:data:`TINY_SUBDIRS`) to ``out_dir/<subdir>``; return ``out_dir``.

    The same seed gives the same weights, byte for byte. Existing files of the same names are
    overwritten; other files in ``out_dir`` are left alone. The global torch RNG is untouched.
    """
    out_dir = Path(out_dir).expanduser()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        built: dict[str, tuple[Any, Any]] = {
            **build_tiny_models(),
            **build_tiny_sam2_video(),
            **build_tiny_mm_grounding_dino(),
        }
    marker = {
        "seed": seed,
        "note": "tiny random-weight model written by `prelabel models tiny`: masks are meaningless",
    }
    with quiet_progress_bars():
        for subdir, (model, processor) in built.items():
            target = out_dir / subdir
            target.mkdir(parents=True, exist_ok=True)
            model.save_pretrained(target)
            if processor is not None:
                processor.save_pretrained(target)
            (target / TINY_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
            logger.info("wrote tiny %s to %s", subdir, target)
    write_tiny_sam3(out_dir / SAM3_SUBDIR, seed=seed)
    logger.info("wrote tiny %s to %s", SAM3_SUBDIR, out_dir / SAM3_SUBDIR)
    return out_dir


def is_tiny_models_dir(folder: Path) -> bool:
    """True when every image model of ``folder`` (the default back-end's ``--models DIR``
    layout) was written by :func:`write_tiny_models`: its masks are meaningless."""
    return all(is_tiny_model_dir(Path(folder) / sub) for sub in MODEL_SUBDIRS.values())


def has_tiny_models(folder: Path) -> bool:
    """True when ``folder`` holds every subdirectory :func:`write_tiny_models` writes."""
    return all((Path(folder) / sub).is_dir() for sub in TINY_SUBDIRS)
