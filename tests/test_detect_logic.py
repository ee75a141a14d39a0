"""Grounding DINO post-processing logic on deterministic inputs: chunks, token spans, NMS."""

from __future__ import annotations

import numpy as np
import pytest

from prelabel.backends.grounded_sam.detect import (
    build_prompt_chunks,
    prompt_scores,
    select_detections,
    token_prompt_index,
)
from prelabel.pipeline.boxes import Detections, box_iou, nms, suppress_duplicates
from prelabel.taxonomy import CategoryPrompt


def _prompt(cid: int, *phrases: str, box: float = 0.3, text: float = 0.25) -> CategoryPrompt:
    options = {"box_threshold": box, "text_threshold": text, "mask_threshold": 0.4}
    return CategoryPrompt(cid, phrases[0], True, phrases, options)


def _words(text: str) -> int:
    """A stand-in tokenizer count: one token per word or '.', plus CLS and SEP."""
    return len(text.replace(".", " . ").split()) + 2


def test_one_chunk_when_it_fits_with_exact_spans() -> None:
    prompts = [_prompt(1, "person", "pedestrian"), _prompt(2, "traffic light")]
    (chunk,) = build_prompt_chunks(prompts, _words, max_tokens=64)
    assert chunk.text == "person . pedestrian . traffic light ."
    assert [(i, chunk.text[s:e]) for i, s, e in chunk.spans] == [
        (0, "person"),
        (0, "pedestrian"),
        (1, "traffic light"),
    ]


def test_split_only_when_over_the_token_limit() -> None:
    prompts = [_prompt(i, f"thing{i}") for i in range(6)]
    # "thing0 ." = 2 words + 2 specials; each extra phrase adds 2
    chunks = build_prompt_chunks(prompts, _words, max_tokens=8)
    assert [c.text for c in chunks] == ["thing0 . thing1 . thing2 .", "thing3 . thing4 . thing5 ."]
    assert all(_words(c.text) <= 8 for c in chunks)
    assert [i for c in chunks for i, _, _ in c.spans] == list(range(6))
    # A phrase over the limit alone gets a chunk of its own (the model truncates it).
    long = build_prompt_chunks(
        [_prompt(1, "sky"), _prompt(2, "a b c d e f g"), _prompt(3, "car")], _words, max_tokens=5
    )
    assert [c.text for c in long] == ["sky .", "a b c d e f g .", "car ."]


def test_token_spans_map_tokens_to_prompts() -> None:
    # "[CLS] person . traffic light . [SEP]" with sub-word "traf" "##fic"
    offsets = np.array(
        [[0, 0], [0, 6], [7, 8], [9, 13], [13, 16], [17, 22], [23, 24], [0, 0]], dtype=np.int64
    )
    spans = [(0, 0, 6), (1, 9, 22)]
    assert token_prompt_index(offsets, spans).tolist() == [-1, 0, -1, 1, 1, 1, -1, -1]


def test_prompt_scores_take_the_best_token_of_each_span() -> None:
    token_index = np.array([-1, 0, -1, 1, 1, -1])
    probs = np.array([[0.9, 0.2, 0.95, 0.1, 0.6, 0.99]], dtype=np.float32)
    # special/separator tokens (0.9, 0.95, 0.99) never count
    assert prompt_scores(probs, token_index, 2).tolist() == [
        [pytest.approx(0.2), pytest.approx(0.6)]
    ]


def test_select_uses_per_category_thresholds() -> None:
    prompts = [_prompt(7, "cat", box=0.5), _prompt(9, "dog", box=0.2, text=0.1)]
    boxes = np.arange(16, dtype=np.float32).reshape(4, 4)
    scores = np.array([[0.45, 0.1], [0.1, 0.3], [0.6, 0.55], [0.05, 0.15]], dtype=np.float32)
    det = select_detections(boxes, scores, prompts)
    # q0: cat 0.45 < 0.5 dropped; q1: dog 0.3 kept; q2: cat 0.6 kept; q3: dog 0.15 < 0.2 dropped
    assert det.category_ids.tolist() == [9, 7]
    assert det.scores.tolist() == pytest.approx([0.3, 0.6])
    assert det.boxes.tolist() == boxes[[1, 2]].tolist()


def test_box_iou_and_nms() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=np.float32)
    assert box_iou(boxes[:1], boxes[1:2])[0, 0] == pytest.approx(81 / 119)
    scores = np.array([0.5, 0.9, 0.7], dtype=np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(boxes, scores, 0.7).tolist() == [1, 2, 0]


def test_suppress_duplicates_within_and_across_categories() -> None:
    det = Detections(
        boxes=np.array(
            [[0, 0, 10, 10], [0, 0, 10, 10.5], [0, 0, 10, 10.2], [0, 0, 4, 10]], dtype=np.float32
        ),
        scores=np.array([0.8, 0.7, 0.9, 0.6], dtype=np.float32),
        category_ids=np.array([1, 1, 2, 2]),
    )
    out = suppress_duplicates(det, nms_iou=0.5, cross_category_iou=0.9, max_detections=10)
    # within cat 1, box 1 is a duplicate of box 0; across, box 0 (cat 1) duplicates box 2 (cat 2)
    assert sorted(zip(out.category_ids.tolist(), out.scores.tolist(), strict=True)) == [
        (2, pytest.approx(0.6)),
        (2, pytest.approx(0.9)),
    ]
    capped = suppress_duplicates(det, nms_iou=0.5, cross_category_iou=0.9, max_detections=1)
    assert capped.scores.tolist() == [pytest.approx(0.9)]
