"""The real SAM 3 back-end code (preprocessing, predictor, post-processing, candidates, merge)
run over a deterministic stand-in for ``Sam3Model``, with a known answer for every pixel.

The stand-in has the call surface the predictor uses (``get_vision_features``,
``get_text_features``, a forward from ``vision_embeds`` and ``text_embeds``, the
``vision_encoder`` and ``text_encoder`` submodules) and answers from the image's colours: a
phrase names a colour; each connected region of that colour at the mask resolution is one
query (mask logit +6 inside, -6 outside), its box the region's extent; the semantic map is +6 on
the colour. The scene is drawn so that every region edge falls on a mask-cell edge, so the
expected category and instance of each pixel follow from the drawing, up to one mask cell at
region edges, where the preprocessing's antialiasing mixes colours.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

from prelabel.backends.sam3.candidates import StuffQuery, ThingQuery
from prelabel.backends.sam3.loading import Sam3Models
from prelabel.backends.sam3.predictor import Sam3Predictor
from prelabel.backends.sam3.session import open_sessions
from prelabel.backends.sam3.tiny import tiny_sam3_tokenizer
from prelabel.pipeline.merge import merge_panoptic

WIDTH, HEIGHT = 120, 80
SIDE, MASK = 80, 40  # the stand-in's input square and mask side: a mask cell is 3 x 2 pixels
PALETTE = {
    "red": (255, 0, 0),
    "green": (0, 200, 0),
    "blue": (0, 0, 255),
    "grey": (128, 128, 128),
    "white": (255, 255, 255),
}
COLOUR_OF = {"car": "red", "automobile": "red", "person": "green", "sky": "blue", "road": "grey"}
NAMES = list(PALETTE)
#: (x0, y0, x1, y1) rectangles, edges on multiples of 3 (x) and 2 (y): on mask-cell edges.
CARS = [(12, 40, 42, 64), (72, 48, 102, 72)]
PERSON = (54, 12, 66, 52)
WHITE = (0, 0, 24, 16)
SKY_BOTTOM = 28


def _scene() -> Image.Image:
    array = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    array[:SKY_BOTTOM] = PALETTE["blue"]
    array[SKY_BOTTOM:] = PALETTE["grey"]
    for x0, y0, x1, y1, colour in [
        *[(*c, "red") for c in CARS],
        (*PERSON, "green"),
        (*WHITE, "white"),
    ]:
        array[y0:y1, x0:x1] = PALETTE[colour]
    return Image.fromarray(array)


class _Encoder(torch.nn.Module):
    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor


class StandinSam3(torch.nn.Module):
    """Deterministic colour-reading stand-in (see the module docstring)."""

    def __init__(self, tokenizer: Any) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.vision_encoder = _Encoder()
        self.text_encoder = _Encoder()
        self.scale = torch.nn.Parameter(torch.ones(()))  # gives the model a dtype

    def get_vision_features(self, pixel_values: torch.Tensor) -> Sam3VisionEncoderOutput:
        rgb = self.vision_encoder(pixel_values) * 0.5 + 0.5  # undo mean/std 0.5
        cells = torch.nn.functional.avg_pool2d(rgb, SIDE // MASK) * 255
        palette = torch.tensor([PALETTE[n] for n in NAMES], dtype=torch.float32)
        distance = (cells[:, None] - palette[None, :, :, None, None]).norm(dim=2)
        colour = distance.argmin(dim=1, keepdim=True).float()  # (B, 1, MASK, MASK)
        return Sam3VisionEncoderOutput(fpn_hidden_states=(colour,), fpn_position_encoding=(colour,))

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        ids = self.text_encoder(input_ids)
        embeds = torch.zeros(len(ids), ids.shape[1], len(NAMES) + 1)
        for row, (tokens, mask) in enumerate(zip(ids, attention_mask, strict=True)):
            phrase = self.tokenizer.decode(tokens[mask.bool()], skip_special_tokens=True).strip()
            colour = COLOUR_OF.get(phrase)
            embeds[row, :, NAMES.index(colour) if colour else len(NAMES)] = 1.0
        return BaseModelOutputWithPooling(pooler_output=embeds)

    def forward(self, vision_embeds: Any, text_embeds: Any, attention_mask: torch.Tensor) -> Any:
        colour_map = vision_embeds.fpn_hidden_states[0][:, 0]
        wanted = text_embeds.pooler_output[:, 0].argmax(dim=1)
        rows = len(wanted)
        queries = 4
        masks = torch.full((rows, queries, MASK, MASK), -6.0)
        logits = torch.full((rows, queries), -6.0)
        boxes = torch.zeros(rows, queries, 4)
        semantic = torch.full((rows, 1, MASK, MASK), -6.0)
        for row in range(rows):
            match = (colour_map[row] == wanted[row]).numpy()
            semantic[row, 0][torch.from_numpy(match)] = 6.0
            regions, _ = ndimage.label(match)
            for q, window in enumerate(ndimage.find_objects(regions)[:queries]):
                masks[row, q][torch.from_numpy(regions == q + 1)] = 6.0
                logits[row, q] = 3.0 - 0.1 * q
                ys, xs = window
                boxes[row, q] = torch.tensor([xs.start, ys.start, xs.stop, ys.stop]) / MASK
        presence = torch.where(logits.max(dim=1, keepdim=True).values > 0, 4.0, -4.0)
        return type(
            "Out",
            (),
            {
                "pred_masks": masks,
                "pred_logits": logits,
                "pred_boxes": boxes,
                "presence_logits": presence,
                "semantic_seg": semantic,
            },
        )()


def _models() -> Sam3Models:
    tokenizer = tiny_sam3_tokenizer()
    return Sam3Models(
        model=StandinSam3(tokenizer),  # type: ignore[arg-type]
        tokenizer=tokenizer,
        image_size=SIDE,
        mask_size=(MASK, MASK),
        text_length=32,
        device=torch.device("cpu"),
        dtype=torch.float32,
        is_tiny=True,
        source="stand-in",
    )


def _expected(person: bool) -> tuple[np.ndarray, np.ndarray]:
    """Category id and instance number (0 = none; cars 1 and 2, person 3) per pixel, and the
    pixels within one mask cell of a region edge."""
    category = np.zeros((HEIGHT, WIDTH), np.int64)
    instance = np.zeros((HEIGHT, WIDTH), np.int64)
    category[:SKY_BOTTOM], category[SKY_BOTTOM:] = 10, 11
    for number, (x0, y0, x1, y1) in enumerate(CARS, start=1):
        category[y0:y1, x0:x1], instance[y0:y1, x0:x1] = 1, number
    x0, y0, x1, y1 = PERSON
    category[y0:y1, x0:x1], instance[y0:y1, x0:x1] = (2, 3) if person else (0, 0)
    x0, y0, x1, y1 = WHITE
    category[y0:y1, x0:x1] = 0
    edges = np.zeros_like(category, bool)
    edges[:, 1:] |= category[:, 1:] != category[:, :-1]
    edges[1:] |= category[1:] != category[:-1]
    near = ndimage.binary_dilation(edges, structure=np.ones((2 * 2 + 1, 2 * 3 + 1), bool))
    return np.stack([category, instance]), near


@pytest.mark.parametrize("person_threshold", [0.5, 0.99])
@pytest.mark.parametrize("prompt_batch", [1, 2])
def test_every_pixel_gets_its_category_and_instance(
    person_threshold: float, prompt_batch: int
) -> None:
    predictor = Sam3Predictor(_models(), prompt_batch=prompt_batch)
    things = [
        ThingQuery(1, ("car", "automobile"), 0.5),
        ThingQuery(2, ("person",), person_threshold),
    ]
    stuff = [StuffQuery(10, ("sky", "unicorn")), StuffQuery(11, ("road",))]
    scenes = [_scene(), _scene()]
    sessions = open_sessions(predictor, scenes)
    for session in sessions:
        thing_candidates = session.things(
            things, nms_iou=0.5, cross_category_iou=0.8, max_detections=20
        )
        candidates = thing_candidates + session.stuff(
            stuff, [c.mask for c in thing_candidates], background_threshold=0.5
        )
        prediction = merge_panoptic(candidates, min_area=0, output_size=(WIDTH, HEIGHT))
        seg = {s.id: s for s in prediction.segments}
        ids = prediction.id_map
        lookup = np.zeros(ids.max() + 1, np.int64)
        for s in prediction.segments:
            lookup[s.id] = s.category_id
        category = lookup[ids]
        (want_category, want_instance), near = _expected(person=person_threshold < 0.9)
        far = ~near
        assert far.sum() > 0.3 * far.size and (want_category[far] > 0).any()
        assert np.array_equal(category[far], want_category[far])
        # Instances: one segment id per expected instance, different ids for different ones.
        for number in range(1, 4):
            pixels = far & (want_instance == number)
            if pixels.any():
                assert len(np.unique(ids[pixels])) == 1 and seg[int(ids[pixels][0])].is_thing
        car_ids = {int(ids[far & (want_instance == n)][0]) for n in (1, 2)}
        assert len(car_ids) == 2  # the synonym's duplicates were suppressed, the cars kept apart
        assert sum(s.is_thing for s in prediction.segments) == (3 if person_threshold < 0.9 else 2)
        # SAM 3's own boxes travel with its things (a bboxes dataset may write them).
        want_boxes = sorted([*CARS, *([PERSON] if person_threshold < 0.9 else [])])
        got_boxes = sorted(s.box for s in prediction.segments if s.is_thing and s.box)
        np.testing.assert_allclose(got_boxes, want_boxes, rtol=0, atol=1.0)
        assert (ids[WHITE[1] + 2 : WHITE[3] - 2, WHITE[0] + 3 : WHITE[2] - 3] == 0).all()
    assert predictor.encoder_passes == 2
    assert predictor.text_passes == 6  # car, automobile, person, sky, unicorn, road: once
