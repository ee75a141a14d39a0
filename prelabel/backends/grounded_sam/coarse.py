"""CLIPSeg: stuff prompts -> rough maps, and the point placement of the ``regions`` method.

CLIPSeg is good at *where* sky or road is and poor at *their edges* (its maps are 352x352 and
blurry), SAM is the reverse. Both stuff methods therefore take CLIPSeg's map
(:class:`StuffSegmenter`) only to place SAM point prompts, and let SAM draw the edges. The seed
method (:mod:`.stuff_seed`) works on the logits upscaled to the image; the helpers below serve
the ``regions`` method (:mod:`.stuff_regions`): the map is thresholded per category, overlaps
between stuff categories go to the highest probability, and a few points well inside each
connected region prompt SAM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from scipy import ndimage
from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

from prelabel.backends.finite import require_finite
from prelabel.backends.grounded_sam.preprocess import DeviceImage, clipseg_inputs, device_images
from prelabel.taxonomy import CategoryPrompt

#: 8-connectivity: regions touching at a corner are one region.
_CONNECTIVITY = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class RegionPoints:
    """Point prompts for one connected region of one stuff prompt.

    ``points`` is ``(K, 2)`` x/y in pixels of the probability map; ``score`` is the mean
    probability over the region, used as the stuff segment's confidence.
    """

    prompt_index: int
    points: npt.NDArray[np.float32]
    score: float


class StuffSegmenter:
    """Runs CLIPSeg for all stuff phrases of one image in one batch, with one vision pass."""

    def __init__(
        self,
        model: CLIPSegForImageSegmentation,
        processor: CLIPSegProcessor,
        device: torch.device,
    ) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        #: CLIP's text positions (77): a longer phrase makes CLIPSeg raise, not truncate.
        self.max_tokens = int(model.config.text_config.max_position_embeddings)
        self._text: tuple[tuple[str, ...], dict[str, torch.Tensor]] | None = None

    def count_tokens(self, phrase: str) -> int:
        """Tokens of one phrase with the special tokens, measured without the tokenizer's
        warning (the prompt check asks about phrases over the limit on purpose)."""
        return len(self.processor.tokenizer(phrase, verbose=False)["input_ids"])

    def probabilities(
        self, image: Image.Image | DeviceImage, prompts: Sequence[CategoryPrompt]
    ) -> npt.NDArray[np.float32]:
        """``(P, h, w)`` probabilities at CLIPSeg's resolution: the sigmoid of :meth:`logits`."""
        return self.logits(image, prompts).sigmoid().cpu().numpy()

    @torch.inference_mode()
    def logits(
        self, image: Image.Image | DeviceImage, prompts: Sequence[CategoryPrompt]
    ) -> torch.Tensor:
        """``(P, h, w)`` float32 logits on the model's device, per prompt the maximum over its
        synonym phrases (the sigmoid is monotonic, so this is also the most probable phrase).

        The vision transformer runs once and its activations are shared by every phrase
        (``CLIPSegForImageSegmentation.forward`` would run it once per phrase).
        """
        phrases = [(i, phrase) for i, p in enumerate(prompts) for phrase in p.phrases]
        if not phrases:
            raise ValueError("no stuff prompts given")
        dtype = next(self.model.parameters()).dtype
        pixels = self.pixels(device_images([image], self.device)[0])
        text = self.tokens(tuple(phrase for _, phrase in phrases))
        vision = self.model.clip.get_image_features(
            pixel_values=pixels.to(dtype), output_hidden_states=True
        )
        count = len(phrases)
        activations = [
            vision.hidden_states[i + 1].expand(count, -1, -1) for i in self.model.extract_layers
        ]
        conditional = self.model.get_conditional_embeddings(
            batch_size=count, input_ids=text["input_ids"], attention_mask=text["attention_mask"]
        )
        logits = self.model.decoder(activations, conditional).logits
        require_finite("clipseg", self.model, logits=logits)
        per_phrase = logits.float().reshape(count, *logits.shape[-2:])
        out = torch.full(
            (len(prompts), *per_phrase.shape[1:]), -torch.inf, device=per_phrase.device
        )
        for row, (index, _) in enumerate(phrases):
            torch.maximum(out[index], per_phrase[row], out=out[index])
        return out

    def tokens(self, phrases: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """The phrases tokenized on the device, kept for the next image with the same phrases
        (tokenizing 100 phrases is tens of milliseconds of host work per image)."""
        if self._text is None or self._text[0] != phrases:
            found = self.processor.tokenizer(list(phrases), padding=True, return_tensors="pt")
            self._text = (phrases, {k: v.to(self.device) for k, v in found.items()})
        return self._text[1]

    def pixels(self, image: DeviceImage) -> torch.Tensor:
        """CLIPSeg's ``pixel_values``, made on the device (:mod:`.preprocess`) unless the
        processor does what that path does not."""
        made = clipseg_inputs(image, self.processor.image_processor)
        if made is not None:
            return made
        found = self.processor.image_processor(images=image.image, return_tensors="pt")
        return found["pixel_values"].to(self.device)


def coarse_labels(
    probs: npt.NDArray[np.float32], thresholds: Sequence[float]
) -> npt.NDArray[np.int64]:
    """Per pixel, the prompt index with the highest probability among those above their threshold.

    ``probs`` is ``(P, h, w)``; the result is ``(h, w)`` with -1 where no prompt passes.
    """
    passing = probs >= np.asarray(thresholds, dtype=np.float32)[:, None, None]
    masked = np.where(passing, probs, -1.0)
    labels = masked.argmax(axis=0)
    return np.where(passing.any(axis=0), labels, -1).astype(np.int64)


def sample_region_points(
    labels: npt.NDArray[np.int64],
    probs: npt.NDArray[np.float32],
    *,
    points_per_region: int,
    min_region_pixels: int,
    max_regions: int,
) -> list[RegionPoints]:
    """``points_per_region`` points in the connected regions of every prompt's coarse mask.

    Regions smaller than ``min_region_pixels`` are noise at CLIPSeg's resolution and get none;
    of the rest, the ``max_regions`` largest per prompt do (each region is one SAM prompt, and a
    speckled map would otherwise make thousands).
    """
    result = []
    for index in range(probs.shape[0]):
        components, count = ndimage.label(labels == index, structure=_CONNECTIVITY)
        if count == 0:
            continue
        sizes = np.bincount(components.ravel(), minlength=count + 1)
        slices = ndimage.find_objects(components)
        largest = np.argsort(-sizes[1:], kind="stable")[:max_regions] + 1
        for region in sorted(int(r) for r in largest):
            if sizes[region] < max(min_region_pixels, 1):
                continue
            window = slices[region - 1]
            mask = components[window] == region
            offset = np.array([window[1].start, window[0].start], dtype=np.float32)
            points = interior_points(mask, points_per_region) + offset
            score = float(probs[index][window][mask].mean())
            result.append(RegionPoints(prompt_index=index, points=points, score=score))
    return result


def interior_points(mask: npt.NDArray[np.bool_], count: int) -> npt.NDArray[np.float32]:
    """``count`` x/y points (pixel centres) spread over the interior of a non-empty region.

    Points near a region's edge are where CLIPSeg's blur puts the wrong class, so candidates are
    the pixels at least half the maximum distance from the edge; the first is the deepest one, each
    next the candidate farthest from those already chosen. Deterministic. A region too small for
    ``count`` distinct points repeats points (SAM takes a fixed number per prompt).
    """
    if not mask.any():
        raise ValueError("cannot place points in an empty region")
    depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    rows, cols = np.nonzero(depth >= depth.max() / 2)
    candidates = np.stack([cols, rows], axis=1).astype(np.float32)
    chosen = [int(np.argmax(depth[rows, cols]))]
    nearest = np.linalg.norm(candidates - candidates[chosen[0]], axis=1)
    while len(chosen) < min(count, len(candidates)):
        nxt = int(np.argmax(nearest))
        chosen.append(nxt)
        nearest = np.minimum(nearest, np.linalg.norm(candidates - candidates[nxt], axis=1))
    picked = candidates[chosen]
    repeats = np.resize(np.arange(len(picked)), count)
    return picked[repeats] + 0.5


def scale_points(
    points: npt.NDArray[np.float32], map_size: tuple[int, int], image_size: tuple[int, int]
) -> npt.NDArray[np.float32]:
    """Map x/y from the ``(w, h)`` probability map to the ``(w, h)`` image it was computed on.

    CLIPSeg's processor squashes the image to a square, so each axis scales on its own.
    """
    scale = np.array([image_size[0] / map_size[0], image_size[1] / map_size[1]], dtype=np.float32)
    return (points * scale).astype(np.float32)
