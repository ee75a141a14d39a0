"""Every prompt within its model's text limit, checked once before the first image.

A stuff category whose prompt is longer than CLIPSeg's 77 text positions used to fail every
image of a run, one by one (CLIPSeg raises on it, after Grounding DINO and SAM had run). Now
the loaded back-end's own tokenizers measure each phrase once per taxonomy, a phrase over the
limit is cut to the whole words that fit with one warning naming the category, and one that
cannot be cut ends the run. The models here are the tiny ones, loaded through
:func:`~prelabel.backends.load_backend` like a run's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from prelabel.backends.base import Backend, TextLimit
from prelabel.cli import main
from prelabel.config import CategoryOptions, ModelSettings, Settings
from prelabel.emulator import Emulator
from prelabel.errors import PromptTooLongError
from prelabel.pipeline.pipeline import Pipeline
from prelabel.pipeline.prompts import fit_prompts
from prelabel.run.policy import ends_run
from prelabel.taxonomy import Category, Taxonomy, build_taxonomy
from tests.connector_helpers import (
    LABELING_PIPELINE,
    SAM3_PIPELINE,
    outcomes_by_uuid,
    read_report,
    write_config,
)
from tests.fixtures.emulator import EMULATOR_API_KEY, SeededDataset

#: 60 words the tiny vocabularies do not know: about 350 tokens, over every model's limit.
RAMBLING = " ".join(f"word{i}" for i in range(60))
CATEGORIES = [Category(1, "person", True), Category(2, "sky")]
CUT_WARNING = "over CLIPSeg's limit of 77; cut to"


@pytest.fixture(scope="module")
def grounded_sam(tiny_models_dir: Path) -> Pipeline:
    """The default back-end over the tiny models, loaded as a run loads it."""
    return Pipeline.load(Settings(models=ModelSettings(device="cpu")), tiny_models_dir)


def taxonomy(**prompts: str) -> Taxonomy:
    options = {name: CategoryOptions(prompt=prompt) for name, prompt in prompts.items()}
    return build_taxonomy(CATEGORIES, options, LABELING_PIPELINE)


def limit_of(backend: Backend, model: str) -> TextLimit:
    (limit,) = [lim for lim in backend.text_limits() if lim.model == model]
    return limit


def test_prompts_within_every_limit_are_left_as_they_are(grounded_sam: Pipeline) -> None:
    plain = taxonomy(sky="sky . clouds")
    assert fit_prompts(plain, grounded_sam.backend.text_limits()) is plain


def test_a_long_stuff_phrase_is_cut_to_the_words_clipseg_reads(
    grounded_sam: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    clipseg = limit_of(grounded_sam.backend, "CLIPSeg")
    assert clipseg.max_tokens == 77  # the tiny CLIPSeg's text positions, as the real one's
    assert clipseg.count_tokens(RAMBLING) > 77
    with caplog.at_level(logging.WARNING, logger="prelabel.pipeline.prompts"):
        fitted = fit_prompts(taxonomy(sky=f"{RAMBLING} . blue sky"), [clipseg])

    (sky,) = fitted.stuff
    cut, kept = sky.phrases
    assert kept == "blue sky"  # a synonym within the limit is untouched
    assert RAMBLING.startswith(f"{cut} ")
    words = cut.split(" ")
    assert clipseg.count_tokens(cut) <= 77
    next_word = RAMBLING.split(" ")[len(words)]
    assert clipseg.count_tokens(f"{cut} {next_word}") > 77  # the longest start that fits
    assert fitted.things == taxonomy().things  # things are Grounding DINO's, not CLIPSeg's
    (message,) = [r.getMessage() for r in caplog.records]
    assert "category 'sky'" in message and CUT_WARNING in message and repr(cut) in message


def test_a_long_thing_phrase_fits_one_grounding_dino_query_and_detect_stays_quiet(
    grounded_sam: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    dino = limit_of(grounded_sam.backend, "Grounding DINO")
    long_thing = " ".join([RAMBLING] * 3)  # over 256 tokens too
    assert dino.count_tokens(long_thing) > dino.max_tokens == 256
    tax = taxonomy(person=long_thing)
    (person,) = grounded_sam.fit(tax).things
    (cut,) = person.phrases
    assert long_thing.startswith(f"{cut} ") and dino.count_tokens(cut) <= 256

    image = Image.fromarray(np.zeros((24, 32, 3), dtype=np.uint8))
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            grounded_sam.predict(image, tax)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    # Once for the taxonomy, not per image; the detector's fallback ("even alone") never runs.
    assert [m for m in warnings if "'person'" in m and "Grounding DINO's limit of 256" in m]
    assert len([m for m in warnings if "'person'" in m]) == 1, warnings
    assert not [m for m in warnings if "even alone" in m]


def test_a_word_longer_than_the_limit_is_cut_by_characters(grounded_sam: Pipeline) -> None:
    clipseg = limit_of(grounded_sam.backend, "CLIPSeg")
    word = "q" * 200  # one byte-level token per letter with the tiny vocabulary
    (sky,) = fit_prompts(taxonomy(sky=f"{word} sky"), [clipseg]).stuff
    (cut,) = sky.phrases
    assert word.startswith(cut) and 0 < len(cut) < len(word)
    assert clipseg.count_tokens(cut) <= 77 < clipseg.count_tokens(cut + "q")


def test_synonyms_equal_once_cut_are_asked_once(grounded_sam: Pipeline) -> None:
    clipseg = limit_of(grounded_sam.backend, "CLIPSeg")
    (sky,) = fit_prompts(taxonomy(sky=f"{RAMBLING} one . {RAMBLING} two"), [clipseg]).stuff
    assert len(sky.phrases) == 1


def test_a_phrase_no_cut_can_fit_ends_the_run_naming_its_category(grounded_sam: Pipeline) -> None:
    clipseg = limit_of(grounded_sam.backend, "CLIPSeg")
    # CLIP's start and end tokens alone fill a limit of 2: not one character fits.
    tight = TextLimit(
        model="CLIPSeg", things=False, stuff=True, max_tokens=2, count_tokens=clipseg.count_tokens
    )
    with pytest.raises(PromptTooLongError, match="category 'sky': CLIPSeg cannot read") as caught:
        fit_prompts(taxonomy(sky="sky"), [tight])
    assert ends_run(caught.value)


def test_sam3_cuts_thing_and_stuff_phrases_to_its_32_tokens(
    tiny_sam3_pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    sam3 = limit_of(tiny_sam3_pipeline.backend, "SAM 3")
    assert (sam3.things, sam3.stuff, sam3.max_tokens) == (True, True, 32)
    tax = build_taxonomy(
        CATEGORIES,
        {"person": CategoryOptions(prompt=RAMBLING), "sky": CategoryOptions(prompt=RAMBLING)},
        SAM3_PIPELINE,
    )
    image = Image.fromarray(np.zeros((24, 32, 3), dtype=np.uint8))
    with caplog.at_level(logging.WARNING):
        tiny_sam3_pipeline.predict(image, tax)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    for name in ("person", "sky"):
        assert [m for m in warnings if f"category {name!r}" in m and "SAM 3's limit of 32" in m]
    # The predictor's own truncation warning (which named no category) has nothing to cut.
    assert not [m for m in warnings if "only its start is used" in m]


def test_a_sequence_s_frames_read_the_cut_prompts_too(
    grounded_sam: Pipeline, tiny_models_dir: Path
) -> None:
    from prelabel.pipeline.sequence import SequencePipeline

    settings = Settings(models=ModelSettings(device="cpu"))
    sequence = SequencePipeline(grounded_sam, settings, tiny_models_dir)
    stuff_only = build_taxonomy(
        [Category(2, "sky")], {"sky": CategoryOptions(prompt=RAMBLING)}, LABELING_PIPELINE
    )
    frames = [Image.fromarray(np.zeros((24, 32, 3), dtype=np.uint8))] * 2
    predictions = list(sequence.predict_frames(frames, stuff_only))
    assert len(predictions) == 2


@pytest.mark.slow
def test_a_run_with_a_stuff_prompt_over_clipsegs_limit_labels_every_sample(
    emulator: Emulator, seeded_dataset: SeededDataset, tiny_models_dir: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.yaml", categories={"sky": {"prompt": RAMBLING}})
    args = ["run", "--dataset", seeded_dataset.full_name, "--api-url", emulator.url]
    args += ["--state-dir", str(tmp_path / "state"), "--out", str(tmp_path / "out"), "-q"]
    args += ["--config", str(config), "--models", str(tiny_models_dir)]
    result = CliRunner().invoke(main, args, env={"SEGMENTS_API_KEY": EMULATOR_API_KEY})

    assert result.exit_code == 0, result.output
    outcomes = outcomes_by_uuid(read_report(tmp_path / "out" / "report.json"))
    assert {o["result"] for o in outcomes.values()} == {"labeled"}
    assert len(outcomes) == len(seeded_dataset.sample_uuids)
    warnings = [line for line in result.stderr.splitlines() if CUT_WARNING in line]
    assert len(warnings) == 1 and "category 'sky'" in warnings[0], result.stderr
