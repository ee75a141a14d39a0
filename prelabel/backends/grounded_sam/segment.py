"""SAM: one image embedding per image, every box and point prompt decoded against it.

The image encoder is nearly all of SAM's cost (ViT-H: about a minute per image on a CPU, the
prompt decoder a tenth of a second per prompt), so :meth:`SamSegmenter.embed` runs it exactly once
and the decoder calls take the cached :class:`ImageEmbedding`. All boxes of an image go to the
decoder in one batched call, and of their masks only each one's tight window comes to host
memory (:meth:`SamSegmenter.box_crops`, :mod:`.thing_masks`); stuff points go in one call for
all regions (``regions``) or in calls of a bounded number of categories each, point lists
padded (``seed``, :meth:`SamSegmenter.point_probabilities`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from transformers import SamModel, SamProcessor
from transformers.models.sam.modeling_sam import SamImageSegmentationOutput

from prelabel.backends.finite import require_finite
from prelabel.backends.grounded_sam import padded_points
from prelabel.backends.grounded_sam.fastest_path import use_host_libraries
from prelabel.backends.grounded_sam.mask_upscale import pad_size_of, upscale_masks
from prelabel.backends.grounded_sam.padded_points import pad_point_sets
from prelabel.backends.grounded_sam.preprocess import (
    DeviceImage,
    SamInputs,
    device_images,
    sam_inputs,
)
from prelabel.backends.grounded_sam.thing_masks import Crop, crop_to_windows

#: Masks are upscaled to full resolution this many prompts at a time, bounding the float memory
#: that post-processing needs (prompts x height x width x 4 bytes).
_POSTPROCESS_CHUNK = 16

#: On a CPU device, the full-size float maps of one chunk stay within this many bytes
#: (:func:`postprocess_chunk`).
_HOST_CHUNK_BYTES = 16 * 2**20


@dataclass(frozen=True)
class ImageEmbedding:
    """The SAM encoder output for one image and the sizes needed to map prompts and masks.

    Sizes are ``(height, width)``: ``original_size`` is the image given to :meth:`embed`,
    ``reshaped_size`` the part of SAM's padded 1024 square it occupies.
    """

    embeddings: torch.Tensor
    original_size: tuple[int, int]
    reshaped_size: tuple[int, int]

    def to_model_coordinates(self, xy: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """Scale ``(..., 2)`` x/y pixel coordinates of the image into SAM's resized frame.

        The same per-axis scaling SamProcessor applies to prompts, done here so prompts don't
        force a second preprocessing of the image.
        """
        (old_h, old_w), (new_h, new_w) = self.original_size, self.reshaped_size
        scale = np.array([new_w / old_w, new_h / old_h], dtype=np.float32)
        return (np.asarray(xy, dtype=np.float32) * scale).astype(np.float32)


@dataclass(frozen=True)
class PromptMasks:
    """``masks``: ``(N, H, W)`` booleans at the embedded image size; ``scores``: SAM IoU guesses."""

    masks: npt.NDArray[np.bool_]
    scores: npt.NDArray[np.float32]


@dataclass(frozen=True)
class BoxCrops:
    """SAM's box masks as they reach host memory: each cut to the tight window of its pixels.

    ``crops[i]`` is mask ``i``'s ``(h, w)`` booleans with its top-left pixel at ``origins[i]``
    ``(row, column)`` of the ``frame`` ``(height, width)`` (the embedded image); an empty mask is
    a ``(0, 0)`` crop. ``scores``: SAM's IoU guesses.
    """

    crops: tuple[npt.NDArray[np.bool_], ...]
    origins: tuple[tuple[int, int], ...]
    frame: tuple[int, int]
    scores: npt.NDArray[np.float32]

    def full(self) -> npt.NDArray[np.bool_]:
        """``(N, height, width)``: the masks at full size (for tests and tools; a full-size
        copy per mask is what the crops avoid)."""
        masks = np.zeros((len(self.crops), *self.frame), dtype=np.bool_)
        for mask, crop, (top, left) in zip(masks, self.crops, self.origins, strict=True):
            mask[top : top + crop.shape[0], left : left + crop.shape[1]] = crop
        return masks


class SamSegmenter:
    """Wraps a transformers ``SamModel`` and its processor; counts encoder passes."""

    def __init__(self, model: SamModel, processor: SamProcessor, device: torch.device) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.encoder_passes = 0

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def embed(self, image: Image.Image | DeviceImage) -> ImageEmbedding:
        """Run the image encoder once; reuse the result for every prompt of this image."""
        (embedding,) = self.embed_batch([image])
        return embedding

    @torch.inference_mode()
    def embed_batch(self, images: Sequence[Image.Image | DeviceImage]) -> list[ImageEmbedding]:
        """One encoder call for several images (each padded to SAM's 1024 square): still one
        encoder pass per image, but the GPU sees a batch."""
        inputs = self.inputs(device_images(images, self.device))
        embeddings = self.model.get_image_embeddings(inputs.pixel_values.to(self._dtype))
        require_finite("sam", self.model, image_embeddings=embeddings)
        self.encoder_passes += len(images)
        return [
            ImageEmbedding(
                embeddings=embeddings[index : index + 1],
                original_size=inputs.original_sizes[index],
                reshaped_size=inputs.reshaped_sizes[index],
            )
            for index in range(len(images))
        ]

    def inputs(self, images: Sequence[DeviceImage]) -> SamInputs:
        """The encoder's input, made on the device (:mod:`.preprocess`) unless the processor
        does what that path does not."""
        made = sam_inputs(images, self.processor.image_processor)
        if made is not None:
            return made
        pil = [image.image for image in images]
        found = self.processor.image_processor(images=pil, return_tensors="pt")
        return SamInputs(
            pixel_values=found["pixel_values"].to(self.device),
            original_sizes=[_pair(s) for s in found["original_sizes"]],
            reshaped_sizes=[_pair(s) for s in found["reshaped_input_sizes"]],
        )

    def segment_boxes(
        self, embedding: ImageEmbedding, boxes: npt.NDArray[np.float32]
    ) -> PromptMasks:
        """:meth:`box_crops` at full size in host memory (tests and tools; the pipeline keeps
        the crops)."""
        found = self.box_crops(embedding, boxes)
        return PromptMasks(masks=found.full(), scores=found.scores)

    @torch.inference_mode()
    def box_crops(self, embedding: ImageEmbedding, boxes: npt.NDArray[np.float32]) -> BoxCrops:
        """One mask per ``(N, 4)`` xyxy box (pixels of the embedded image), one decoder call;
        upscaled on the model's device, :func:`postprocess_chunk` at a time, and only each
        mask's tight window copied to host memory."""
        if len(boxes) == 0:
            return BoxCrops((), (), embedding.original_size, np.zeros(0, dtype=np.float32))
        corners = embedding.to_model_coordinates(np.asarray(boxes).reshape(-1, 2, 2)).reshape(-1, 4)
        input_boxes = torch.from_numpy(corners)[None].to(self.device, self._dtype)
        outputs = self.model(
            image_embeddings=embedding.embeddings, input_boxes=input_boxes, multimask_output=False
        )
        require_finite("sam", self.model, box_masks=outputs.pred_masks)
        crops: list[Crop] = []
        for masks in self._upscaled(embedding, outputs.pred_masks[0, :, 0]):
            crops.extend(crop_to_windows(masks))
        return BoxCrops(
            crops=tuple(crop for crop, _ in crops),
            origins=tuple(origin for _, origin in crops),
            frame=embedding.original_size,
            scores=outputs.iou_scores[0, :, 0].float().cpu().numpy().astype(np.float32),
        )

    @torch.inference_mode()
    def segment_points(
        self, embedding: ImageEmbedding, point_sets: Sequence[npt.NDArray[np.float32]]
    ) -> PromptMasks:
        """One mask per set of positive points (each ``(K, 2)`` x/y, same K), one decoder call.

        SAM answers a point prompt with three candidate masks (part, object, whole); the one with
        the highest predicted IoU is kept, as SAM's own predictor recommends for ambiguous prompts.
        """
        if not point_sets:
            return self._empty(embedding)
        outputs = self._decode_points(embedding, np.stack(point_sets))
        iou = outputs.iou_scores[0]  # (M, 3)
        best = iou.argmax(dim=1)
        rows = torch.arange(len(best), device=best.device)
        return self._postprocess(embedding, outputs.pred_masks[0, rows, best], iou[rows, best])

    @torch.inference_mode()
    def point_probabilities(
        self, embedding: ImageEmbedding, point_sets: Sequence[npt.NDArray[np.floating]]
    ) -> torch.Tensor:
        """SAM's probability maps for prompts of ``(K_i, 2)`` positive x/y points, one decoder
        call for all of them: ``(M, H, W)`` float32 on the model's device, in ``[0, 1]``.

        The seed's greedy fill: of SAM's three masks (part, object, whole) the pixel-wise
        maximum of the sigmoids, upscaled as probabilities by the processor's
        ``post_process_masks(binarize=False)`` (pad crop included, so portrait images are
        right). Point lists of different lengths are padded and the padding is masked out of
        the decoder's attention (:mod:`.padded_points`), so each map is the one a call of its
        own would give. The caller bounds ``M``: the result holds ``M`` full-size maps.
        """
        points, labels = pad_point_sets(point_sets)
        label_tensor = torch.from_numpy(labels).to(self.device)
        if padded_points.install(self.model):
            with padded_points.masked_padding(label_tensor):
                outputs = self._decode_points(embedding, points, label_tensor)
        else:
            outputs = self._decode_points(embedding, points, label_tensor)
        low_res = outputs.pred_masks[0].float().sigmoid().amax(dim=1, keepdim=True)
        return self._upscale(embedding, low_res)[:, 0]

    def _decode_points(
        self,
        embedding: ImageEmbedding,
        point_sets: npt.NDArray[np.floating],
        labels: torch.Tensor | None = None,
    ) -> SamImageSegmentationOutput:
        """One decoder call for ``(M, K, 2)`` x/y points, three masks per prompt; ``labels``
        ``(M, K)``, all positive when None."""
        points = embedding.to_model_coordinates(point_sets)
        input_points = torch.from_numpy(points)[None].to(self.device, self._dtype)
        if labels is None:
            labels = torch.ones(points.shape[:2], dtype=torch.long, device=self.device)
        input_labels = labels[None]
        outputs = self.model(
            image_embeddings=embedding.embeddings,
            input_points=input_points,
            input_labels=input_labels,
            multimask_output=True,
        )
        require_finite("sam", self.model, point_masks=outputs.pred_masks)
        return outputs

    def _upscaled(self, embedding: ImageEmbedding, low_res: torch.Tensor) -> Iterator[torch.Tensor]:
        """``(N, 256, 256)`` logits -> ``(n, H, W)`` bool masks at the image size on the model's
        device, :func:`postprocess_chunk` at a time."""
        chunk = postprocess_chunk(low_res.device, embedding.original_size)
        for start in range(0, len(low_res), chunk):
            part = low_res[start : start + chunk, None].float()
            yield self._upscale(embedding, part)[:, 0] > 0.0

    def _upscale(self, embedding: ImageEmbedding, low_res: torch.Tensor) -> torch.Tensor:
        """``(N, 1, 256, 256)`` float -> ``(N, 1, H, W)``: the processor's
        ``post_process_masks(binarize=False)``, without upscaling its padding
        (:mod:`.mask_upscale`); binarized as the processor does it, ``> 0``, by the caller."""
        pad = pad_size_of(self.processor.image_processor)
        return upscale_masks(low_res, embedding.original_size, embedding.reshaped_size, pad)

    def _postprocess(
        self, embedding: ImageEmbedding, low_res: torch.Tensor, scores: torch.Tensor
    ) -> PromptMasks:
        """Upscale ``(N, 256, 256)`` logits to the image size; full-size masks to the host."""
        chunks = [masks.cpu().numpy() for masks in self._upscaled(embedding, low_res)]
        return PromptMasks(
            masks=np.concatenate(chunks).astype(bool, copy=False),
            scores=scores.float().cpu().numpy().astype(np.float32),
        )

    @staticmethod
    def _empty(embedding: ImageEmbedding) -> PromptMasks:
        height, width = embedding.original_size
        return PromptMasks(
            masks=np.zeros((0, height, width), dtype=bool), scores=np.zeros(0, dtype=np.float32)
        )


def postprocess_chunk(device: torch.device, size: tuple[int, int]) -> int:
    """How many masks of ``size`` ``(height, width)`` are upscaled together on ``device``.

    :data:`_POSTPROCESS_CHUNK` on an accelerator: fewer, larger kernels, within its memory
    bound. On a CPU device (:mod:`.fastest_path`) a chunk stays within
    :data:`_HOST_CHUNK_BYTES`: 16 float maps of 1920x1080 are 133 MB, which the C library's
    allocator hands out as fresh pages for every chunk (each touched page a fault, costly in a
    virtual machine) and which no cache holds; 2 to 4 at a time upscaled SAM's box masks of an
    image about twice as fast on the 2-core development CPU. The masks are the same either
    way: each is upscaled on its own."""
    if not use_host_libraries(device):
        return _POSTPROCESS_CHUNK
    height, width = size
    return max(1, min(_POSTPROCESS_CHUNK, _HOST_CHUNK_BYTES // (height * width * 4)))


def _pair(values: torch.Tensor) -> tuple[int, int]:
    """A processor's ``(height, width)`` tensor as two ints."""
    height, width = (int(v) for v in values)
    return height, width
