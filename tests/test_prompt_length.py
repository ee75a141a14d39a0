"""Long thing prompts: no tokenizer warning where chunking handles them, ours where it cannot.

Grounding DINO reads at most ``max_text_len`` tokens (256), and the COCO-panoptic taxonomy's 80
thing names come to 265. Splitting the prompt measures candidate texts over the limit on purpose,
which made transformers warn "Token indices sequence length is longer than the specified maximum
sequence length ... indexing errors" although nothing is ever indexed past the limit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from transformers import GroundingDinoProcessor

from prelabel.backends.grounded_sam.detect import ThingDetector
from prelabel.backends.grounded_sam.loading import LoadedModels
from prelabel.config import CategoryOptions, PipelineSettings
from prelabel.taxonomy import Category, build_taxonomy, load_categories_file

REPO = Path(__file__).resolve().parent.parent
TOO_LONG = "Token indices sequence length is longer than the specified maximum"
OPEN = PipelineSettings(box_threshold=0.0, text_threshold=0.0)


@pytest.fixture
def transformers_log() -> Iterator[list[str]]:
    """Messages logged by transformers (its loggers do not propagate to the root logger)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect(level=logging.WARNING)
    root = logging.getLogger("transformers")
    root.addHandler(handler)
    try:
        yield messages
    finally:
        root.removeHandler(handler)


def _fresh_detector(tiny_models: LoadedModels, tiny_models_dir: Path) -> ThingDetector:
    """A detector with a tokenizer of its own: transformers warns once per tokenizer object."""
    processor = GroundingDinoProcessor.from_pretrained(tiny_models_dir / "grounding_dino")
    return ThingDetector(tiny_models.grounding_dino, processor, tiny_models.device)


@pytest.mark.slow
def test_coco_things_split_without_the_tokenizer_warning(
    tiny_models: LoadedModels, tiny_models_dir: Path, transformers_log: list[str]
) -> None:
    categories, options = load_categories_file(REPO / "configs/coco-panoptic-categories.yaml")
    things = build_taxonomy(categories, options, PipelineSettings()).things
    assert len(things) == 80
    detector = _fresh_detector(tiny_models, tiny_models_dir)
    chunks = detector.prompt_chunks(things)
    assert len(chunks) > 1
    assert all(detector.count_tokens(c.text) <= detector.max_tokens for c in chunks)
    assert not [m for m in transformers_log if TOO_LONG in m]
    # The capture works: the same tokenizer, asked the way it was before, does warn.
    joined = " . ".join(p.name for p in things) + " ."
    detector.processor.tokenizer(joined)
    assert [m for m in transformers_log if TOO_LONG in m]


@pytest.mark.slow
def test_a_phrase_too_long_alone_is_our_warning_naming_its_category(
    tiny_models: LoadedModels,
    tiny_models_dir: Path,
    transformers_log: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    rambling = " ".join(f"word{i}" for i in range(150))  # about 900 tokens with the tiny vocab
    categories = [Category(1, "person", True), Category(2, "odd thing", True)]
    taxonomy = build_taxonomy(categories, {"odd thing": CategoryOptions(prompt=rambling)}, OPEN)
    detector = _fresh_detector(tiny_models, tiny_models_dir)
    image = Image.fromarray(np.zeros((48, 64, 3), dtype=np.uint8))
    with caplog.at_level(logging.WARNING, logger="prelabel.backends.grounded_sam.detect"):
        for _ in range(2):  # warned once for the taxonomy, not once per image
            found = detector.detect(
                image, taxonomy.things, nms_iou=0.5, cross_category_iou=0.9, max_detections=10
            )
            assert len(found) > 0
    ours = [r.getMessage() for r in caplog.records if "even alone" in r.getMessage()]
    assert len(ours) == 1
    assert "'odd thing'" in ours[0] and "limit of 256" in ours[0]
    assert not [m for m in transformers_log if TOO_LONG in m]
