"""``prelabel evaluate --dataset`` on a ``bboxes`` or ``vector`` dataset: COCO-style AP.

Kept apart from :mod:`prelabel.cli.evaluate`, whose output is PQ's: here the table and the
JSON hold AP, AP50, AP75 and AP per category (:mod:`prelabel.evaluate.coco_ap`).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from prelabel.cli._stops import exit_evaluation_stopped
from prelabel.config import Settings
from prelabel.errors import ConfigError
from prelabel.formats.atomic import atomic_file
from prelabel.segments.client import DatasetInfo, SegmentsApi
from prelabel.taxonomy import Taxonomy


def evaluate_vector_command(
    api: SegmentsApi,
    info: DatasetInfo,
    taxonomy: Taxonomy,
    settings: Settings,
    models_dir: Path | None,
    *,
    labelset: str,
    limit: int | None,
    out: Path,
    quiet: bool,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Load the models, evaluate, print the AP table, write ``out``; exit 1 when samples
    failed (they are left out of the scores and listed under ``failures``)."""
    from prelabel.evaluate.vector_dataset import (
        evaluate_vector_dataset,
        evaluate_vector_sequence_dataset,
    )
    from prelabel.progress import TqdmProgress
    from prelabel.run.models import pipeline_loader

    loader = pipeline_loader(settings, models_dir)
    if info.is_sequence:  # every frame an image of the AP
        evaluation = evaluate_vector_sequence_dataset(
            api,
            loader.sequence(),
            taxonomy,
            info,
            labelset=labelset,
            limit=limit,
            settings=settings,
            progress=TqdmProgress(disable=quiet),
            should_stop=should_stop,
        )
    else:
        evaluation = evaluate_vector_dataset(
            api,
            loader(),
            taxonomy,
            info,
            labelset=labelset,
            limit=limit,
            settings=settings,
            progress=TqdmProgress(disable=quiet),
            should_stop=should_stop,
        )
    document: dict[str, Any] = {
        "dataset": info.full_name,
        "labelset": labelset,
        "metric": f"COCO AP ({evaluation.kind})",
        **evaluation.result.as_dict(),
        "not_human_labeled": evaluation.not_human_labeled,
        "interrupted": evaluation.interrupted,
        "failures": [
            {"sample_uuid": f.sample_uuid, "sample_name": f.sample_name, "reason": f.reason}
            for f in evaluation.failures
        ],
    }
    try:
        with atomic_file(out, "w") as f:
            json.dump(document, f, indent=2, allow_nan=True)
            f.write("\n")
    except OSError as exc:
        raise ConfigError(f"{out}: cannot write: {exc.strerror or exc}") from None
    names = {c.id: c.name for c in taxonomy.categories}
    click.echo(_table(evaluation.result.as_dict(), names))
    if evaluation.failures:
        click.echo(f"{len(evaluation.failures)} samples could not be evaluated", err=True)
    click.echo(f"wrote {out}", err=True)
    if evaluation.interrupted:
        exit_evaluation_stopped(evaluation.evaluated)
    if evaluation.failures:
        sys.exit(1)


def _table(result: dict[str, Any], names: dict[int, str]) -> str:
    """AP per category, then AP, AP50 and AP75; ``-`` where nothing was measured."""
    rows = [f"{'category':<24} {'AP':>6}"]
    for key, value in result["per_category"].items():
        rows.append(f"{names.get(int(key), key):<24} {_percent(value):>6}")
    for label in ("ap", "ap50", "ap75"):
        rows.append(f"{label.upper():<24} {_percent(result[label]):>6}")
    return "\n".join(rows)


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}"
