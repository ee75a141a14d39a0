"""Run SAM 3 on images and phrases at a bounded cost.

- **Vision encoder once per image.** :meth:`Sam3Predictor.encode` runs it on a batch of images
  and keeps each image's feature pyramid (on the model's device); every prompt reuses it.
  :attr:`Sam3Predictor.encoder_passes` counts images through the encoder (a forward hook, so a
  pass made anywhere is counted).
- **Text once per run.** Phrase embeddings are cached by phrase text, so a taxonomy's phrases
  go through the text encoder once, on the first image, not on every image
  (:attr:`Sam3Predictor.text_passes` counts phrases through the text encoder).
- **Prompts in batches of K.** The detector (DETR encoder and decoder, mask decoder) sees at
  most ``prompt_batch`` phrases at once, the image's features expanded (not copied) to K rows,
  so memory stays flat whatever the taxonomy: 133 categories are ``ceil(133 / K)`` calls.

Results stay on the device until a prompt batch is post-processed; then one transfer to the
host per batch brings its instances (or its semantic maps stay on the device for the stuff
argmax, see :mod:`.candidates`).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

from prelabel.backends.finite import require_finite
from prelabel.backends.sam3.loading import SAM3_SUBDIR, Sam3Models
from prelabel.backends.sam3.processing import pixel_values, select_instances

__all__ = ["ImageFeatures", "Instances", "Sam3Predictor"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageFeatures:
    """One image's vision-encoder output (batch of one, on the model's device) and the
    ``(height, width)`` of the working image that results are returned at."""

    vision: Sam3VisionEncoderOutput
    size: tuple[int, int]


@dataclass(frozen=True)
class Instances:
    """One phrase's instances in one image, on the host: ``masks`` ``(N, H, W)`` bool at the
    working size, ``boxes`` ``(N, 4)`` xyxy pixels, ``scores`` ``(N,)``."""

    masks: npt.NDArray[np.bool_]
    boxes: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class _Text:
    embeds: torch.Tensor  # (P, L, D) on the device
    mask: torch.Tensor  # (P, L) attention mask


class Sam3Predictor:
    """SAM 3 over already-loaded models (see the module docstring for the costs it bounds)."""

    def __init__(self, models: Sam3Models, *, prompt_batch: int = 8) -> None:
        if prompt_batch < 1:
            raise ValueError(f"prompt_batch must be at least 1, got {prompt_batch}")
        self.models = models
        self.prompt_batch = prompt_batch
        self._text: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._counts = {"vision": 0, "text": 0, "detector": 0}
        model = models.model
        self._hooks = [
            model.vision_encoder.register_forward_hook(self._counter("vision"), with_kwargs=True),
            model.text_encoder.register_forward_hook(self._counter("text"), with_kwargs=True),
        ]

    def close(self) -> None:
        """Remove the counting hooks from the (shared) model; the cached text is dropped."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        self._text.clear()

    @property
    def encoder_passes(self) -> int:
        """Images that went through the vision encoder since this predictor was built."""
        return self._counts["vision"]

    @property
    def text_passes(self) -> int:
        """Phrases that went through the text encoder since this predictor was built."""
        return self._counts["text"]

    @property
    def detector_calls(self) -> int:
        """Detector calls made by this predictor (each with at most ``prompt_batch`` rows)."""
        return self._counts["detector"]

    def _counter(self, key: str) -> Any:
        """A forward hook adding the batch size of the module's first tensor input."""

        def hook(module: torch.nn.Module, args: Any, kwargs: Any, output: Any) -> None:
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            self._counts[key] += int(tensors[0].shape[0]) if tensors else 1

        return hook

    @torch.inference_mode()
    def encode(self, images: Sequence[Image.Image]) -> list[ImageFeatures]:
        """One vision-encoder pass over ``images`` (all in one batch); features per image."""
        if not images:
            return []
        models = self.models
        pixels = pixel_values(images, models.image_size).to(models.device, models.dtype)
        out = models.model.get_vision_features(pixel_values=pixels)
        require_finite(SAM3_SUBDIR, models.model, vision_features=out.fpn_hidden_states[-1])
        return [
            ImageFeatures(
                vision=Sam3VisionEncoderOutput(
                    fpn_hidden_states=tuple(h[i : i + 1] for h in out.fpn_hidden_states),
                    fpn_position_encoding=tuple(p[i : i + 1] for p in out.fpn_position_encoding),
                ),
                size=(image.height, image.width),
            )
            for i, image in enumerate(images)
        ]

    @torch.inference_mode()
    def instances(
        self, features: ImageFeatures, phrases: Sequence[str], thresholds: Sequence[float]
    ) -> list[Instances]:
        """Per phrase, its instances in the image, as transformers' post-processing makes
        them with that phrase's score threshold."""
        if len(thresholds) != len(phrases):
            raise ValueError(f"{len(thresholds)} thresholds for {len(phrases)} phrases")
        results: list[Instances] = []
        for start in range(0, len(phrases), self.prompt_batch):
            chunk = list(phrases[start : start + self.prompt_batch])
            out = self._detect(features, chunk)
            require_finite(
                SAM3_SUBDIR,
                self.models.model,
                pred_logits=out.pred_logits,
                presence_logits=out.presence_logits,
                pred_boxes=out.pred_boxes,
                pred_masks=out.pred_masks,
            )
            selected = [
                select_instances(
                    out.pred_logits[row],
                    out.presence_logits[row],
                    out.pred_boxes[row],
                    out.pred_masks[row],
                    threshold=float(thresholds[start + row]),
                    size=features.size,
                )
                for row in range(len(chunk))
            ]
            results.extend(_to_host(selected))
        return results

    @torch.inference_mode()
    def semantic_logits(self, features: ImageFeatures, phrases: Sequence[str]) -> torch.Tensor:
        """``(P, h, w)`` float32 semantic logits per phrase, at the model's mask size, on the
        device (:func:`~.processing.semantic_probabilities` brings them to the image)."""
        maps = []
        for start in range(0, len(phrases), self.prompt_batch):
            out = self._detect(features, list(phrases[start : start + self.prompt_batch]))
            require_finite(SAM3_SUBDIR, self.models.model, semantic_seg=out.semantic_seg)
            maps.append(out.semantic_seg[:, 0].float())
        if not maps:
            height, width = self.models.mask_size
            return torch.zeros((0, height, width), device=self.models.device)
        return torch.cat(maps)

    @torch.inference_mode()
    def prepare_text(self, phrases: Sequence[str]) -> None:
        """Encode the phrases not cached yet, K at a time (a run may call this once up front;
        otherwise the first image does it)."""
        missing = list(dict.fromkeys(p for p in phrases if p not in self._text))
        for start in range(0, len(missing), self.prompt_batch):
            self._encode_text(missing[start : start + self.prompt_batch])

    def _detect(self, features: ImageFeatures, phrases: list[str]) -> Any:
        text = self._text_embeddings(phrases)
        rows = len(phrases)
        vision = Sam3VisionEncoderOutput(
            fpn_hidden_states=tuple(_rows(h, rows) for h in features.vision.fpn_hidden_states),
            fpn_position_encoding=tuple(
                _rows(p, rows) for p in features.vision.fpn_position_encoding
            ),
        )
        self._counts["detector"] += 1
        return self.models.model(
            vision_embeds=vision,
            text_embeds=BaseModelOutputWithPooling(pooler_output=text.embeds),
            attention_mask=text.mask,
        )

    def _text_embeddings(self, phrases: list[str]) -> _Text:
        """Embeddings of ``phrases`` from the cache, encoding those not seen yet (in one call:
        ``phrases`` is at most one prompt batch)."""
        missing = list(dict.fromkeys(p for p in phrases if p not in self._text))
        if missing:
            self._encode_text(missing)
        embeds = torch.stack([self._text[p][0] for p in phrases])
        mask = torch.stack([self._text[p][1] for p in phrases])
        return _Text(embeds=embeds, mask=mask)

    def _encode_text(self, phrases: list[str]) -> None:
        models = self.models
        tokens = models.tokenizer(
            phrases,
            padding="max_length",
            max_length=models.text_length,
            truncation=True,
            return_tensors="pt",
        )
        full = models.tokenizer(phrases, verbose=False)["input_ids"]
        for phrase, ids_full in zip(phrases, full, strict=True):
            if len(ids_full) > models.text_length:
                logger.warning(
                    "phrase %r is %d tokens, over SAM 3's limit of %d; only its start is used",
                    phrase,
                    len(ids_full),
                    models.text_length,
                )
        ids = tokens["input_ids"].to(models.device)
        mask = tokens["attention_mask"].to(models.device)
        embeds = models.model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        require_finite(SAM3_SUBDIR, models.model, text_embeddings=embeds)
        for row, phrase in enumerate(phrases):
            self._text[phrase] = (embeds[row], mask[row])


def _rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """A batch-of-one tensor seen as ``rows`` rows without copying."""
    return tensor.expand(rows, *tensor.shape[1:])


def _to_host(selected: Sequence[Any]) -> list[Instances]:
    """One transfer per tensor kind for a whole prompt batch, then split per phrase."""
    counts = [len(s.scores) for s in selected]
    masks = torch.cat([s.masks for s in selected]).cpu().numpy()
    boxes = torch.cat([s.boxes for s in selected]).cpu().numpy().astype(np.float32)
    scores = torch.cat([s.scores for s in selected]).cpu().numpy().astype(np.float32)
    bounds = np.cumsum([0, *counts])
    return [
        Instances(masks=masks[a:b], boxes=boxes[a:b], scores=scores[a:b])
        for a, b in itertools.pairwise(bounds)
    ]
