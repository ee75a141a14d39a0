"""Everything about a dataset that can be checked before any sample is touched."""

from __future__ import annotations

from prelabel.backends import option_reader
from prelabel.config import Settings
from prelabel.errors import ConfigError
from prelabel.segments.client import DatasetInfo, SegmentsApi
from prelabel.segments.statuses import LABELABLE_TASK_TYPES, VECTOR_TASK_TYPES
from prelabel.taxonomy import Taxonomy, build_taxonomy, categories_from_task_attributes


def check_dataset(
    api: SegmentsApi,
    settings: Settings,
    dataset: str,
    labelset: str,
    *,
    sequences: bool = False,
    vectors: bool = False,
) -> tuple[DatasetInfo, Taxonomy]:
    """The dataset and its taxonomy, or a ConfigError saying why prelabel cannot label it.

    A wrong task type, a missing labelset or categories the config does not match would fail
    every sample alike, so they stop a run before it starts. ``info.is_sequence`` tells image
    datasets from sequence datasets (one bitmap per frame); only a caller that can label
    sequences passes ``sequences=True``, the others refuse them here, by name. Likewise
    ``vectors=True`` for box and polygon datasets (``bboxes``, ``vector``: no bitmap, the label
    holds the shapes).
    """
    info = api.get_dataset(dataset)
    if info.task_type not in LABELABLE_TASK_TYPES:
        raise ConfigError(
            f"dataset {dataset} has task type {info.task_type!r}; prelabel writes "
            f"segmentation bitmaps, boxes and polygons, and needs one of "
            f"{', '.join(sorted(LABELABLE_TASK_TYPES))}"
        )
    if info.task_type in VECTOR_TASK_TYPES and not vectors:
        raise ConfigError(
            f"dataset {dataset} holds boxes or polygons ({info.task_type!r}); this command labels "
            "segmentation-bitmap datasets only: use `prelabel run`, `sync` or `serve` "
            "(local engine)"
        )
    if info.is_sequence and not sequences:
        raise ConfigError(
            f"dataset {dataset} is an image sequence ({info.task_type}); this command labels "
            "image datasets only: use `prelabel run`, `prelabel sync` or `prelabel serve`"
        )
    if info.labelsets and labelset not in info.labelsets:
        raise ConfigError(
            f"dataset {dataset} has no labelset {labelset!r}; it has {', '.join(info.labelsets)}"
        )
    categories = categories_from_task_attributes(info.task_attributes)
    if not categories:
        raise ConfigError(f"dataset {dataset} defines no categories")
    reader = option_reader(settings)  # an unknown models.backend fails here, before any work
    taxonomy = build_taxonomy(categories, settings.categories, settings.pipeline, reader=reader)
    return info, taxonomy
