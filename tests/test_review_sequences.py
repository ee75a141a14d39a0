"""The review session on an image-sequence dataset (issue 21): predict a sequence, push it.

The session predicts a sequence as ``prelabel run`` does (the frames stream through SAM 2 and
the back-end; ids are track ids) and pushes the accepted frames through the run's driver:
admitted (lease, resume record), each frame's bitmap uploaded and recorded, the label written
once after a re-read. The pushed label obeys the sequence rules ``tests/test_run_sequences.py``
holds ``prelabel run`` to, and holds exactly the frames the reviewer saw.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from segments import SegmentsClient

from prelabel.backends.grounded_sam.backend import GroundedSam
from prelabel.backends.grounded_sam.loading import LoadedModels
from prelabel.config import SequenceSettings
from prelabel.emulator import Emulator
from prelabel.emulator.sequences import moving_shapes, seed_sequence_dataset
from prelabel.errors import ConfigError
from prelabel.pipeline.pipeline import Pipeline
from prelabel.review import ReviewSession
from prelabel.review.sequences import SequenceReviewItem
from prelabel.segments.client import SegmentsApi
from prelabel.state import LABELED
from tests.connector_helpers import EMULATOR_API_KEY, LABELING_PIPELINE, make_settings, state_stage
from tests.fixtures.emulator import DEMO_CATEGORIES
from tests.test_run_sequences import assert_valid_sequence_prelabel

GT = "ground-truth"
DATASET = "jane/review-clips"


@pytest.mark.slow
def test_a_sequence_is_predicted_and_pushed_frame_by_frame_through_the_driver(
    emulator: Emulator,
    segments_client: SegmentsClient,
    tiny_models: LoadedModels,
    tiny_models_dir: Path,
    tmp_path: Path,
) -> None:
    clips = {
        "walk": list(moving_shapes(3, seed=1)),
        "quiet": list(moving_shapes(3, seed=3, empty_frames={1})),
    }
    uuids = seed_sequence_dataset(emulator, DATASET, clips, DEMO_CATEGORIES).sample_uuids
    settings = make_settings(emulator.url).model_copy(
        update={"sequence": SequenceSettings(keyframe_interval=2)}
    )
    session = ReviewSession(
        SegmentsApi.connect(EMULATOR_API_KEY, settings.remote),
        DATASET,
        settings=settings,
        pipeline=Pipeline(GroundedSam(tiny_models), LABELING_PIPELINE),
        models_dir=tiny_models_dir,
        state_dir=tmp_path / "state",
    )
    try:
        samples = session.samples(limit=2)
        with pytest.raises(ConfigError, match="predict_sequence"):
            session.predict(samples[0])
        items = [session.predict_sequence(sample) for sample in samples]
        assert all(isinstance(item, SequenceReviewItem) for item in items)
        assert [len(item.frames) for item in items] == [3, 3]
        assert items[0].preview(2).width > 0 and items[0].rows()
        assert 0.0 <= items[0].score <= 1.0

        outcomes = session.push(items)
    finally:
        session.close()

    assert [o.sample_uuid for o in outcomes] == [s.uuid for s in samples]
    assert [o.result for o in outcomes] == ["labeled", "labeled"], outcomes
    assert emulator.label_write_counts() == {(u, GT): 1 for u in uuids}
    by_uuid = dict(zip(uuids, clips.values(), strict=True))
    for item, outcome in zip(items, outcomes, strict=True):
        frames = assert_valid_sequence_prelabel(
            segments_client, item.sample.uuid, by_uuid[item.sample.uuid]
        )
        # The label holds the frames the reviewer saw: each frame's ids are its prediction's.
        assert [sorted(a["id"] for a in f["annotations"]) for f in frames] == [
            sorted(s.id for s in p.segments) for p in item.predictions
        ]
        assert outcome.score == pytest.approx(item.score)
        assert state_stage(tmp_path, DATASET, item.sample.uuid) == LABELED
