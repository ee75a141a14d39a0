"""Evaluate the pipeline on a dataset's human-labeled samples: PQ, SQ and RQ, nothing uploaded.

This is how a team tunes thresholds and prompts before a run: predict on samples a person has
already labeled and score the predictions against those labels with :mod:`prelabel.evaluate`.

* **Which samples**: those whose label in the labelset is LABELED, REVIEWED or VERIFIED
  (:data:`HUMAN_LABEL_STATUSES`). A PRELABELED label is a model's guess, and one in progress,
  rejected or skipped is not an answer a person stands behind; scoring against them would be
  scoring the model against itself or against half-done work.
* **Read-only**: only GET requests (the listing, each label, the images and bitmaps). Nothing is
  uploaded or written, so evaluating can never disturb a dataset people are working on.
* **Categories**: the evaluated categories are those the pipeline is asked for, i.e. the
  dataset's categories minus the ones the config ignores. A ground-truth segment of any other
  category (ignored in the config, or an id the dataset no longer defines) is turned into
  unlabeled pixels, VOID: the model was not asked for it, so neither missing it nor predicting
  something else there should count. Likewise, pixels whose id has no annotation (a bitmap and
  annotation list out of step) are VOID rather than an error, since they say nothing about a
  category. Both are counted in :class:`DatasetEvaluation`, so a surprising number shows.
* **Failures are per sample**: a missing or unreadable bitmap, a bitmap of the wrong size or
  format, an image that cannot be loaded. The sample is logged with its name and the reason,
  recorded in :attr:`DatasetEvaluation.failures`, and the evaluation goes on. A refused key
  stops at once, as do several samples in a row failing on server trouble (the server is down,
  and a PQ over whatever got through would mislead).
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from prelabel.config import PipelineSettings
from prelabel.errors import (
    AuthError,
    ModelLoadError,
    PrelabelError,
    RemoteError,
    SampleError,
    TransientRemoteError,
)
from prelabel.evaluate import VOID, PanopticFrame, PQAccumulator, PQResult, frame_from_prediction
from prelabel.panoptic import PanopticPrediction
from prelabel.progress import NullProgress, Progress
from prelabel.segments_client import SampleRef, SegmentsApi
from prelabel.source import load_image
from prelabel.taxonomy import Category, Taxonomy

__all__ = [
    "HUMAN_LABEL_STATUSES",
    "DatasetEvaluation",
    "Predictor",
    "SampleFailure",
    "decode_bitmap",
    "evaluate_dataset",
    "evaluated_categories",
    "ground_truth_frame",
]

logger = logging.getLogger(__name__)

#: Label statuses meaning a person finished the label: only these samples are evaluated.
HUMAN_LABEL_STATUSES = frozenset({"LABELED", "REVIEWED", "VERIFIED"})

#: After this many samples in a row fail on server trouble (each after its own retries), stop.
_MAX_CONSECUTIVE_TRANSIENT = 3
_DEFAULT_MAX_IMAGE_PIXELS = PipelineSettings().max_image_pixels


class Predictor(Protocol):
    """What is evaluated: :class:`prelabel.pipeline.pipeline.Pipeline` (typed structurally so
    this module does not import torch)."""

    def predict(self, image: Image.Image, taxonomy: Taxonomy) -> PanopticPrediction: ...


@dataclass(frozen=True)
class SampleFailure:
    """A sample that could not be evaluated, and why; it is left out of the scores."""

    sample_uuid: str
    sample_name: str
    reason: str


@dataclass(frozen=True)
class DatasetEvaluation:
    """The scores of one evaluation plus what it needs to be read honestly.

    ``result.images`` samples were scored. ``not_human_labeled`` samples were listed but
    skipped for their status; ``failures`` were selected but not scored.
    ``voided_segments`` counts ground-truth segments (with pixels) whose category is not
    evaluated, ``unannotated_pixels`` the ground-truth pixels whose id has no annotation;
    both were treated as unlabeled.
    """

    result: PQResult
    not_human_labeled: int = 0
    failures: tuple[SampleFailure, ...] = ()
    voided_segments: int = 0
    unannotated_pixels: int = 0

    def as_meta(self) -> dict[str, Any]:
        """The fields beside the PQ numbers in the JSON result (see ``write_result``)."""
        return {
            "samples": {
                "evaluated": self.result.images,
                "failed": len(self.failures),
                "not_human_labeled": self.not_human_labeled,
            },
            "ground_truth_voided": {
                "segments_of_unevaluated_categories": self.voided_segments,
                "pixels_without_annotation": self.unannotated_pixels,
            },
            "failures": [
                {"sample_uuid": f.sample_uuid, "sample_name": f.sample_name, "reason": f.reason}
                for f in self.failures
            ],
        }


def evaluated_categories(taxonomy: Taxonomy) -> tuple[Category, ...]:
    """The dataset's categories that the pipeline is asked for, in the dataset's order.

    Categories the config ignores are left out: scoring them would only report the model
    missing what it was told not to look for.
    """
    prompted = {p.category_id for p in taxonomy.prompts}
    return tuple(c for c in taxonomy.categories if c.id in prompted)


def evaluate_dataset(
    api: SegmentsApi,
    pipeline: Predictor,
    taxonomy: Taxonomy,
    *,
    dataset: str,
    labelset: str = "ground-truth",
    limit: int | None = None,
    max_image_pixels: int = _DEFAULT_MAX_IMAGE_PIXELS,
    progress: Progress | None = None,
) -> DatasetEvaluation:
    """Predict on each human-labeled sample of ``dataset`` and score against its label.

    Samples are taken in the listing's order (oldest first); ``limit`` caps how many
    human-labeled samples are attempted (failures included), so a quick look at a large
    dataset stays quick. ``max_image_pixels`` is the decoding guard of the pipeline settings.

    Raises:
        AuthError: the key was refused.
        RemoteError: the samples cannot be listed, or the server stays unreachable.
        ModelLoadError: the models cannot run at all.
    """
    progress = progress or NullProgress()
    categories = evaluated_categories(taxonomy)
    accumulator = PQAccumulator(categories)
    evaluated_ids = frozenset(c.id for c in categories)
    counts = _Counts()
    failures: list[SampleFailure] = []
    consecutive_transient = 0
    progress.start(limit, "evaluate")
    try:
        for sample in api.iter_samples(dataset, labelset):
            if sample.label_status not in HUMAN_LABEL_STATUSES:
                counts.not_human_labeled += 1
                continue
            if limit is not None and accumulator.images + len(failures) >= limit:
                break
            try:
                _evaluate_sample(
                    api,
                    pipeline,
                    taxonomy,
                    sample,
                    accumulator,
                    counts,
                    labelset=labelset,
                    evaluated=evaluated_ids,
                    max_image_pixels=max_image_pixels,
                )
            except (AuthError, ModelLoadError):
                raise  # would fail every sample alike
            except TransientRemoteError as exc:
                consecutive_transient += 1
                if consecutive_transient >= _MAX_CONSECUTIVE_TRANSIENT:
                    raise RemoteError(
                        f"stopping: {consecutive_transient} samples in a row failed to reach "
                        f"the server after retries (last: {exc})"
                    ) from None
                failures.append(_failure(sample, str(exc)))
            except PrelabelError as exc:
                consecutive_transient = 0
                failures.append(_failure(sample, str(exc)))
            except (OSError, ValueError, RuntimeError) as exc:
                # An inconsistent frame or a model-code failure: keep the traceback in the log.
                consecutive_transient = 0
                logger.debug("sample %s (%s)", sample.name, sample.uuid, exc_info=True)
                failures.append(_failure(sample, f"{type(exc).__name__}: {exc}"))
            else:
                consecutive_transient = 0
            progress.advance()
            if failures:
                progress.note(failed=len(failures))
    finally:
        progress.close()
    return DatasetEvaluation(
        result=accumulator.result(),
        not_human_labeled=counts.not_human_labeled,
        failures=tuple(failures),
        voided_segments=counts.voided_segments,
        unannotated_pixels=counts.unannotated_pixels,
    )


@dataclass
class _Counts:
    not_human_labeled: int = 0
    voided_segments: int = 0
    unannotated_pixels: int = 0


def _failure(sample: SampleRef, reason: str) -> SampleFailure:
    logger.error("sample %s (%s) not evaluated: %s", sample.name, sample.uuid, reason)
    return SampleFailure(sample.uuid, sample.name, reason)


def _evaluate_sample(
    api: SegmentsApi,
    pipeline: Predictor,
    taxonomy: Taxonomy,
    sample: SampleRef,
    accumulator: PQAccumulator,
    counts: _Counts,
    *,
    labelset: str,
    evaluated: Set[int],
    max_image_pixels: int,
) -> None:
    """Score one sample into ``accumulator``; nothing is counted if it raises.

    The label is read and checked before the (expensive) prediction, so a broken label costs
    no model time.
    """

    def fail(reason: str) -> SampleError:
        return SampleError(reason, sample_uuid=sample.uuid, sample_name=sample.name)

    label = api.label_bitmap(sample.uuid, labelset)
    if label is None:
        raise fail(f"the label in {labelset!r} is gone (deleted since the listing)")
    annotations, bitmap_url = label
    if not bitmap_url:
        raise fail("the label has no segmentation bitmap")
    try:
        png = api.download(bitmap_url)
    except RemoteError as exc:
        # As for images (source.load_image): a refused or missing asset is this sample's
        # problem, not the API key's.
        raise fail(f"label bitmap download failed: {exc}") from None
    image = load_image(api, sample, max_pixels=max_image_pixels)
    try:
        id_map = decode_bitmap(png, image.size)
    except ValueError as exc:
        raise fail(str(exc)) from None
    ground_truth, voided, unannotated = ground_truth_frame(id_map, annotations, evaluated)
    prediction = frame_from_prediction(pipeline.predict(image, taxonomy))
    accumulator.add(prediction, ground_truth)
    counts.voided_segments += voided
    counts.unannotated_pixels += unannotated


def decode_bitmap(png: bytes, size: tuple[int, int]) -> npt.NDArray[np.uint32]:
    """Segments.ai label bitmap -> ``(height, width)`` ids, ``R + 256*G + 65536*B``.

    ``size`` is the image's ``(width, height)``; a bitmap of another size cannot be compared
    pixel by pixel. It is checked from the header, before decoding, so a huge file costs
    nothing. Alpha is ignored, as the SDK does.

    Raises:
        ValueError: not a readable image, not 4-channel RGBA (the format the platform writes),
            or not the image's size.
    """
    try:
        with warnings.catch_warnings():
            # The image, already decoded under our own pixel limit, bounds the bitmap's size.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(png)) as bitmap:
                if bitmap.mode != "RGBA":
                    raise ValueError(
                        f"the label bitmap must be a 4-channel RGBA PNG, got mode {bitmap.mode}"
                    )
                if bitmap.size != size:
                    raise ValueError(
                        f"the label bitmap is {bitmap.size[0]}x{bitmap.size[1]} but the image "
                        f"is {size[0]}x{size[1]}"
                    )
                rgba = np.asarray(bitmap)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"the label bitmap cannot be read: {exc}") from None
    ids = rgba[:, :, 0].astype(np.uint32)
    ids |= rgba[:, :, 1].astype(np.uint32) << 8
    ids |= rgba[:, :, 2].astype(np.uint32) << 16
    return ids


def ground_truth_frame(
    id_map: npt.NDArray[np.uint32], annotations: Mapping[int, int], evaluated: Set[int]
) -> tuple[PanopticFrame, int, int]:
    """A person's label as the evaluation sees it, with what had to be made VOID.

    Pixels whose id has no annotation, and segments whose category is not in ``evaluated``,
    become VOID (0), i.e. unlabeled: see the module docstring for why. Returns the frame, the
    number of voided segments that had pixels, and the number of pixels without annotation.
    """
    present = [int(i) for i in np.unique(id_map) if i != VOID]
    kept = {i: c for i, c in annotations.items() if c in evaluated}
    unannotated = [i for i in present if i not in annotations]
    voided = [i for i in present if i in annotations and i not in kept]
    unannotated_pixels = int(np.isin(id_map, unannotated).sum()) if unannotated else 0
    if unannotated or voided:
        id_map = np.where(np.isin(id_map, unannotated + voided), VOID, id_map).astype(np.uint32)
    voided_segments = len(voided)
    return PanopticFrame(id_map=id_map, segments=kept), voided_segments, unannotated_pixels
