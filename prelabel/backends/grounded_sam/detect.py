"""Grounding DINO: thing prompts -> boxes with category ids.

All thing prompts of an image go into one text query ("person . pedestrian . car ."), split into
several queries only when the text exceeds the model's token limit (texts are measured without
the tokenizer's "longer than the maximum" warning, which this splitting makes moot; a phrase too
long for any query gets our own warning naming its category). Each detection is mapped back
to its category through the **token spans** of the prompt: the character span of every phrase is
known when the text is built, the tokenizer's offsets say which tokens fall in it, and a query's
score for a category is its highest token probability inside that category's spans. The decoded
label string of transformers' post-processing is never used: it merges sub-words and adjacent
phrases and cannot tell two categories with overlapping words apart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from transformers import GroundingDinoProcessor
from transformers.image_transforms import center_to_corners_format

from prelabel.backends.finite import require_finite
from prelabel.backends.grounded_sam.loading import Detector
from prelabel.backends.grounded_sam.preprocess import (
    DeviceImage,
    device_images,
    grounding_dino_inputs,
)
from prelabel.pipeline.boxes import Detections, suppress_duplicates
from prelabel.taxonomy import CategoryPrompt

logger = logging.getLogger(__name__)

#: Grounding DINO separates phrases with " . " and expects the text to end with ".".
SEPARATOR = " . "


@dataclass(frozen=True)
class PromptChunk:
    """One text query and, per phrase, ``(prompt index, start char, end char)`` in ``text``."""

    text: str
    spans: tuple[tuple[int, int, int], ...]


def build_prompt_chunks(
    prompts: Sequence[CategoryPrompt], count_tokens: Callable[[str], int], max_tokens: int
) -> list[PromptChunk]:
    """Pack every phrase of every prompt into as few texts as fit ``max_tokens``.

    ``count_tokens(text)`` returns the token count including special tokens. Phrases of one
    category may land in different chunks; each chunk maps its spans back on its own. A phrase
    that alone exceeds ``max_tokens`` is logged as a warning naming its category and gets a chunk
    of its own, which the model truncates to its first ``max_tokens`` tokens (so the category
    is still looked for, by the start of its phrase, rather than failing every image).
    """
    phrases = [(i, phrase) for i, p in enumerate(prompts) for phrase in p.phrases]
    chunks: list[PromptChunk] = []
    text, spans = "", list[tuple[int, int, int]]()
    for index, phrase in phrases:
        candidate = _append(text, phrase)
        if spans and count_tokens(candidate) > max_tokens:
            chunks.append(PromptChunk(text=text, spans=tuple(spans)))
            text, spans = "", []
            candidate = _append(text, phrase)
        if (alone := count_tokens(candidate)) > max_tokens:
            logger.warning(
                "category %r: its phrase %r is %d tokens with Grounding DINO's special tokens, "
                "over the model's limit of %d even alone; only its first tokens are used. "
                "Shorten its prompt in the config's categories section",
                prompts[index].name,
                phrase,
                alone,
                max_tokens,
            )
        start = len(candidate) - len(phrase) - len(" .")  # the phrase just appended
        spans.append((index, start, start + len(phrase)))
        text = candidate
    if spans:
        chunks.append(PromptChunk(text=text, spans=tuple(spans)))
    return chunks


def _append(text: str, phrase: str) -> str:
    """``"" + "car"`` -> ``"car ."``; ``"car ." + "bus"`` -> ``"car . bus ."``."""
    return f"{phrase} ." if not text else f"{text[:-1].rstrip()}{SEPARATOR}{phrase} ."


def token_prompt_index(
    offsets: npt.NDArray[np.int64], spans: Sequence[tuple[int, int, int]]
) -> npt.NDArray[np.int64]:
    """For each token, the prompt index whose phrase span contains it, else -1.

    ``offsets`` is the tokenizer's ``(T, 2)`` char offsets; special tokens have ``(0, 0)`` and
    separators fall outside every span, so both map to -1.
    """
    result = np.full(len(offsets), -1, dtype=np.int64)
    for index, start, end in spans:
        inside = (offsets[:, 0] >= start) & (offsets[:, 1] <= end) & (offsets[:, 1] > offsets[:, 0])
        result[inside] = index
    return result


def prompt_scores(
    token_probs: npt.NDArray[np.float32], token_index: npt.NDArray[np.int64], n_prompts: int
) -> npt.NDArray[np.float32]:
    """``(Q, T)`` token probabilities -> ``(Q, P)``: the best token of each prompt's spans."""
    scores = np.zeros((token_probs.shape[0], n_prompts), dtype=np.float32)
    for index in range(n_prompts):
        columns = np.flatnonzero(token_index == index)
        if columns.size:
            scores[:, index] = token_probs[:, columns].max(axis=1)
    return scores


def select_detections(
    boxes: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    prompts: Sequence[CategoryPrompt],
) -> Detections:
    """Give each query its best-scoring category and keep it if it passes that category's gates.

    ``scores`` is ``(Q, P)`` from :func:`prompt_scores`. A query is kept when its best category
    score reaches both the category's ``box_threshold`` and ``text_threshold`` (the reference
    implementation gates the box on the best token and the label on tokens above the text
    threshold; with per-category spans both gates read the same best token).
    """
    if scores.size == 0:
        return Detections.empty()
    best = scores.argmax(axis=1)
    best_score = scores[np.arange(len(best)), best]
    gates = np.array(
        [max(p.option("box_threshold"), p.option("text_threshold")) for p in prompts],
        dtype=np.float32,
    )
    keep = np.flatnonzero(best_score >= gates[best])
    category_ids = np.array([p.category_id for p in prompts], dtype=np.int64)
    return Detections(
        boxes=boxes[keep].astype(np.float32),
        scores=best_score[keep].astype(np.float32),
        category_ids=category_ids[best[keep]],
    )


class ThingDetector:
    """Runs the Grounding DINO-style detector (Grounding DINO, MM Grounding DINO, LLMDet) for
    the thing prompts of one image."""

    def __init__(
        self,
        model: Detector,
        processor: GroundingDinoProcessor,
        device: torch.device,
    ) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.max_tokens = int(model.config.max_text_len)
        self._chunks: tuple[tuple[CategoryPrompt, ...], list[PromptChunk]] | None = None

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` with special tokens, measured silently: chunking asks about texts
        over the limit on purpose, and the tokenizer would warn about each one."""
        return len(self.processor.tokenizer(text, verbose=False)["input_ids"])

    def count_phrase_tokens(self, phrase: str) -> int:
        """Tokens of a query holding ``phrase`` alone (``"phrase ."``), special tokens included:
        what must fit :attr:`max_tokens` for the phrase to be read whole."""
        return self.count_tokens(_append("", phrase))

    def prompt_chunks(self, prompts: Sequence[CategoryPrompt]) -> list[PromptChunk]:
        """:func:`build_prompt_chunks` for this model, remembered for the last prompts: a run
        asks for the same taxonomy on every image, and warnings should come once, not per
        image."""
        key = tuple(prompts)
        if self._chunks is None or self._chunks[0] != key:
            chunks = build_prompt_chunks(prompts, self.count_tokens, self.max_tokens)
            if len(chunks) > 1:
                logger.info(
                    "thing prompts split into %d queries (token limit %d)",
                    len(chunks),
                    self.max_tokens,
                )
            self._chunks = (key, chunks)
        return self._chunks[1]

    def detect(
        self,
        image: Image.Image,
        prompts: Sequence[CategoryPrompt],
        *,
        nms_iou: float,
        cross_category_iou: float,
        max_detections: int,
    ) -> Detections:
        """Boxes in pixels of ``image`` for the given thing prompts."""
        (found,) = self.detect_batch(
            [image],
            prompts,
            nms_iou=nms_iou,
            cross_category_iou=cross_category_iou,
            max_detections=max_detections,
        )
        return found

    @torch.inference_mode()
    def detect_batch(
        self,
        images: Sequence[Image.Image | DeviceImage],
        prompts: Sequence[CategoryPrompt],
        *,
        nms_iou: float,
        cross_category_iou: float,
        max_detections: int,
    ) -> list[Detections]:
        """One model call per prompt chunk for all ``images`` (padded to a common size; the
        pixel mask keeps padding out and boxes come back relative to each image)."""
        if not prompts:
            return [Detections.empty() for _ in images]
        chunks = self.prompt_chunks(prompts)
        on_device = device_images(images, self.device)
        pixels = self.pixels(on_device)
        dtype = next(self.model.parameters()).dtype
        sizes = [image.image.size for image in on_device]
        per_chunk = [self._detect_chunk(pixels, chunk, prompts, dtype, sizes) for chunk in chunks]
        results = []
        for index in range(len(images)):
            found = [chunk_result[index] for chunk_result in per_chunk]
            merged = Detections(
                boxes=np.concatenate([d.boxes for d in found]),
                scores=np.concatenate([d.scores for d in found]),
                category_ids=np.concatenate([d.category_ids for d in found]),
            )
            results.append(
                suppress_duplicates(
                    merged,
                    nms_iou=nms_iou,
                    cross_category_iou=cross_category_iou,
                    max_detections=max_detections,
                )
            )
        return results

    def pixels(self, images: Sequence[DeviceImage]) -> dict[str, torch.Tensor]:
        """The detector's ``pixel_values`` and ``pixel_mask``, made on the device
        (:mod:`.preprocess`) unless the processor does what that path does not."""
        made = grounding_dino_inputs(images, self.processor.image_processor)
        if made is not None:
            return made
        pil = [image.image for image in images]
        found = self.processor.image_processor(images=pil, return_tensors="pt").to(self.device)
        return dict(found)

    def _detect_chunk(
        self,
        pixels: dict[str, torch.Tensor],
        chunk: PromptChunk,
        prompts: Sequence[CategoryPrompt],
        dtype: torch.dtype,
        sizes: Sequence[tuple[int, int]],
    ) -> list[Detections]:
        batch = len(sizes)
        text = self.processor.tokenizer(
            chunk.text,
            return_offsets_mapping=True,
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        )
        offsets = text.pop("offset_mapping")[0].numpy()
        outputs = self.model(
            pixel_values=pixels["pixel_values"].to(dtype),
            pixel_mask=pixels.get("pixel_mask"),
            **{k: v.to(self.device).expand(batch, -1) for k, v in text.items()},
        )
        n_tokens = offsets.shape[0]
        # Logits past the text are -inf by design (padding to max_text_len): check the text's.
        logits = outputs.logits[:, :, :n_tokens]
        require_finite("grounding_dino", self.model, logits=logits, boxes=outputs.pred_boxes)
        token_index = token_prompt_index(offsets, chunk.spans)
        all_probs = logits.float().sigmoid().cpu().numpy()
        all_boxes = center_to_corners_format(outputs.pred_boxes.float().cpu()).numpy()
        found = []
        for index, (width, height) in enumerate(sizes):
            limits = np.array([width, height, width, height], dtype=np.float32)
            boxes = np.clip(all_boxes[index] * limits, 0, limits).astype(np.float32)
            scores = prompt_scores(all_probs[index], token_index, len(prompts))
            found.append(select_detections(boxes, scores, prompts))
        return found
