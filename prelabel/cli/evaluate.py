"""``prelabel evaluate``: panoptic quality of predictions against human labels.

Two modes, exactly one per call: ``--dataset`` predicts on a Segments.ai dataset's
human-labeled samples and scores against those labels (read-only, nothing is uploaded);
``--predictions`` with ``--ground-truth`` compares two COCO-panoptic exports on disk.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from prelabel.cli._common import (
    CONTEXT_SETTINGS,
    UsageFailure,
    api_key_file_option,
    api_url_option,
    config_option,
    dataset_name,
    device_option,
    key_and_settings,
    models_option,
    quiet_option,
    usage_errors,
)
from prelabel.cli._preflight import check_api, check_models
from prelabel.cli._stops import exit_evaluation_stopped

if TYPE_CHECKING:
    from prelabel.config import Settings
    from prelabel.evaluate.dataset import DatasetEvaluation
    from prelabel.evaluate.sequence_dataset import SequenceEvaluation
    from prelabel.segments.client import SegmentsApi
    from prelabel.taxonomy import Taxonomy

#: Name of the result file written beside the predictions' JSON unless --out says otherwise.
DEFAULT_RESULT_NAME = "evaluation.json"
#: Result file of --dataset mode, in the current folder: evaluation-OWNER-NAME.json.
DEFAULT_DATASET_RESULT = "evaluation-{owner}-{name}.json"
#: Labelset read in --dataset mode unless --labelset names another.
DEFAULT_LABELSET = "ground-truth"

F = TypeVar("F", bound=Callable[..., Any])

_SHOWN_DATASET_RESULT = DEFAULT_DATASET_RESULT.format(owner="OWNER", name="NAME")
_DATASET = re.compile(r"([^/\s]+)/([^/\s]+)")
_UNSAFE_IN_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


def _export_option(flag: str, help: str) -> Callable[[F], F]:
    """``--predictions`` / ``--ground-truth``: a COCO-panoptic export, stored as ``NAME_path``."""
    name = flag.removeprefix("--").replace("-", "_") + "_path"
    return click.option(flag, name, type=click.Path(path_type=Path), default=None, help=help)


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option(
    "--dataset",
    default=None,
    envvar="PRELABEL_DATASET",
    show_envvar=True,
    callback=dataset_name,
    help="Evaluate on this Segments.ai dataset (OWNER/NAME): predict on every sample whose "
    "label is LABELED, REVIEWED or VERIFIED and score against that label. Read-only.",
)
@click.option(
    "--labelset",
    default=None,
    help=f"With --dataset: the labelset holding the human labels (default {DEFAULT_LABELSET}).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="With --dataset: evaluate at most N human-labeled samples (oldest first).",
)
@api_url_option("With --dataset: ")
@api_key_file_option("With --dataset: ")
@models_option
@config_option
@device_option
@_export_option(
    "--predictions",
    "COCO-panoptic export to score: a folder with NAME.json and NAME/ (as `prelabel "
    "predict` writes panoptic.json and panoptic/), the JSON file, or its PNG folder.",
)
@_export_option(
    "--ground-truth",
    "COCO-panoptic export of the human labels, in the same layouts. Its categories are "
    "the ones evaluated; both exports must hold the same images (matched by file_name).",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Result JSON. Default with --dataset: {_SHOWN_DATASET_RESULT} in the current folder;"
    f" with --predictions: {DEFAULT_RESULT_NAME} beside the predictions' "
    "JSON, so the score stays with the run it scores.",
)
@quiet_option
def evaluate(
    dataset: str | None,
    labelset: str | None,
    limit: int | None,
    api_url: str | None,
    api_key_file: Path | None,
    models_dir: Path | None,
    config_path: Path | None,
    device: str | None,
    predictions_path: Path | None,
    ground_truth_path: Path | None,
    out_path: Path | None,
    quiet: bool,
) -> None:
    """Score predictions against human labels with panoptic quality (PQ, SQ, RQ).

    COCO panopticapi's definition: a predicted and a labeled segment of one category match at
    IoU > 0.5; unlabeled pixels are ignored. Prints a table (each category, then the means over
    all categories, things and stuff, in percent) and writes the numbers as JSON. Use it to
    tune thresholds and prompts before a run.

    With --dataset, the pipeline predicts on the samples a person has labeled and nothing is
    uploaded. Categories the config ignores are not evaluated (their labeled pixels count as
    unlabeled). A sample that cannot be evaluated (missing bitmap, unreadable image) is logged,
    listed under "failures" in the JSON, and the rest goes on.

    Exit code 0 on success, 1 when some dataset samples could not be evaluated (the scores
    cover the others), 2 for usage, config, key or model problems and unusable exports,
    130 when --dataset mode is stopped by Ctrl-C or SIGTERM (the sample in flight is
    finished, the scores of the samples done are printed and written, marked
    "interrupted"; a second Ctrl-C stops at once).

    \b
    Example:
      export SEGMENTS_API_KEY=...   # never printed or logged
      prelabel evaluate --dataset jane/streets --config configs/default.yaml --limit 50
      prelabel predict photos/ --categories cats.yaml --out pred/
      prelabel evaluate --predictions pred/ --ground-truth labels-export/ --out pq.json
    """
    exports = predictions_path is not None or ground_truth_path is not None
    from_env = _from_environment() if exports else set()
    if "dataset" in from_env:
        dataset = None  # PRELABEL_DATASET (from `prelabel demo --keep-serving`) yields to exports
    if dataset is not None:
        if exports:
            raise UsageFailure(
                "give either --dataset OWNER/NAME or --predictions PATH with --ground-truth "
                "PATH, not both"
            )
        _evaluate_dataset(
            dataset,
            labelset=labelset or DEFAULT_LABELSET,
            limit=limit,
            api_url=api_url,
            api_key_file=api_key_file,
            models_dir=models_dir,
            config_path=config_path,
            device=device,
            out_path=out_path,
            quiet=quiet,
        )
        return
    if predictions_path is None and ground_truth_path is None:
        raise UsageFailure(
            "give --dataset OWNER/NAME to evaluate on a dataset's human labels, or "
            "--predictions PATH and --ground-truth PATH to compare two exports"
        )
    dataset_only = {
        "--labelset": labelset,
        "--limit": limit,
        "--api-url": api_url,
        "--api-key-file": api_key_file,
        "--models": models_dir,
        "--config": config_path,
        "--device": device,
    }
    given = [
        name
        for name, value in dataset_only.items()
        if value is not None and _param(name) not in from_env
    ]
    if given:
        raise UsageFailure(f"{', '.join(given)} only apply with --dataset")
    if predictions_path is None or ground_truth_path is None:
        raise UsageFailure("give both --predictions PATH and --ground-truth PATH")
    _evaluate_exports(predictions_path, ground_truth_path, out_path=out_path, quiet=quiet)


def _param(flag: str) -> str:
    """``--api-url`` -> ``api_url``; ``--models`` and ``--config`` name their paths."""
    name = flag.removeprefix("--").replace("-", "_")
    return {"models": "models_dir", "config": "config_path"}.get(name, name)


def _from_environment() -> set[str]:
    """The parameters whose value came from a ``PRELABEL_*`` variable, not the command line."""
    ctx = click.get_current_context()
    return {
        name
        for name in ("dataset", "api_url", "models_dir", "config_path")
        if ctx.get_parameter_source(name) is click.core.ParameterSource.ENVIRONMENT
    }


def default_dataset_result(dataset: str) -> Path:
    """``evaluation-OWNER-NAME.json`` in the current folder, odd characters replaced."""
    owner, _, name = dataset.partition("/")
    return Path(
        DEFAULT_DATASET_RESULT.format(
            owner=_UNSAFE_IN_FILENAME.sub("_", owner), name=_UNSAFE_IN_FILENAME.sub("_", name)
        )
    )


def _evaluate_dataset(
    dataset: str,
    *,
    labelset: str,
    limit: int | None,
    api_url: str | None,
    api_key_file: Path | None,
    models_dir: Path | None,
    config_path: Path | None,
    device: str | None,
    out_path: Path | None,
    quiet: bool,
) -> None:
    """Connect, check the dataset and config, load the models, evaluate, print and write.

    Checks run cheapest first (as in ``prelabel run``): a bad key or dataset is reported
    before seconds go into loading the models.
    """
    if not _DATASET.fullmatch(dataset):
        raise UsageFailure(f"--dataset must be OWNER/NAME, got {dataset!r}")
    key, settings = key_and_settings(api_key_file, config_path, api_url=api_url, device=device)
    check_api(settings)

    from prelabel.cli._vector_eval import evaluate_vector_command
    from prelabel.evaluate.dataset import HUMAN_LABEL_STATUSES, evaluation_meta
    from prelabel.evaluate.results import format_table, format_tracking, write_result
    from prelabel.evaluate.sequence_dataset import SequenceEvaluation
    from prelabel.run.sync import StopSignal
    from prelabel.segments.client import SegmentsApi
    from prelabel.segments.dataset import check_dataset
    from prelabel.segments.statuses import VECTOR_TASK_TYPES

    with usage_errors():
        api = SegmentsApi.connect(key, settings.remote)
    try:
        with StopSignal(hard_second=True).installed() as stop, usage_errors():
            info, taxonomy = check_dataset(
                api, settings, dataset, labelset, sequences=True, vectors=True
            )
            check_models(settings, models_dir)
            if info.task_type in VECTOR_TASK_TYPES:  # boxes and polygons: AP, not PQ
                out = out_path or default_dataset_result(dataset)
                return evaluate_vector_command(
                    api,
                    info,
                    taxonomy,
                    settings,
                    models_dir,
                    labelset=labelset,
                    limit=limit,
                    out=out,
                    quiet=quiet,
                    should_stop=stop.is_set,
                )
            evaluation = _evaluate(
                api,
                info.is_sequence,
                taxonomy,
                settings,
                models_dir,
                quiet,
                dataset=dataset,
                labelset=labelset,
                limit=limit,
                should_stop=stop.is_set,
            )
            meta = evaluation_meta(
                evaluation,
                taxonomy,
                settings,
                dataset=dataset,
                labelset=labelset,
                limit=limit,
                config_path=config_path,
            )
            out = out_path or default_dataset_result(dataset)
            write_result(evaluation.pq, out, meta=meta)
    finally:
        api.close()
    click.echo(format_table(evaluation.pq))
    if isinstance(evaluation, SequenceEvaluation):
        click.echo(format_tracking(evaluation.result, evaluation.sequences))
    if evaluation.evaluated == 0 and not evaluation.failures:
        click.echo(
            f"no sample of {dataset} has a human label ({', '.join(sorted(HUMAN_LABEL_STATUSES))})"
            f" in labelset {labelset!r}: nothing was evaluated",
            err=True,
        )
    if evaluation.failures:
        click.echo(
            f"{len(evaluation.failures)} samples could not be evaluated and are left out of the "
            f"scores; reasons under 'failures' in {out}",
            err=True,
        )
    click.echo(f"wrote {out}", err=True)
    if evaluation.interrupted:
        exit_evaluation_stopped(evaluation.evaluated)
    if evaluation.failures:
        sys.exit(1)


def _evaluate(
    api: SegmentsApi,
    sequences: bool,
    taxonomy: Taxonomy,
    settings: Settings,
    models_dir: Path | None,
    quiet: bool,
    **where: Any,
) -> DatasetEvaluation | SequenceEvaluation:
    """Load the models (torch and transformers take seconds: after every cheap check) and
    evaluate images, or sequences with the SAM 2 tracker."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from prelabel.evaluate.dataset import evaluate_dataset
    from prelabel.evaluate.sequence_dataset import evaluate_sequence_dataset
    from prelabel.progress import TqdmProgress
    from prelabel.run.models import pipeline_loader

    loader = pipeline_loader(settings, models_dir)
    progress = TqdmProgress(disable=quiet)
    with logging_redirect_tqdm():
        if sequences:
            return evaluate_sequence_dataset(
                api, loader.sequence(), taxonomy, settings=settings, progress=progress, **where
            )
        return evaluate_dataset(
            api, loader(), taxonomy, settings=settings, progress=progress, **where
        )


def _evaluate_exports(
    predictions_path: Path, ground_truth_path: Path, *, out_path: Path | None, quiet: bool
) -> None:
    """Local mode: two COCO-panoptic exports on disk."""
    from prelabel.evaluate.exports import evaluate_coco_dirs, locate_coco_panoptic
    from prelabel.evaluate.results import format_table, write_result
    from prelabel.progress import TqdmProgress

    with usage_errors():
        predictions = locate_coco_panoptic(predictions_path)
        ground_truth = locate_coco_panoptic(ground_truth_path)
        result = evaluate_coco_dirs(
            predictions.json_path, ground_truth.json_path, progress=TqdmProgress(disable=quiet)
        )
        out = out_path or predictions.json_path.parent / DEFAULT_RESULT_NAME
        write_result(
            result,
            out,
            meta={
                "predictions": str(predictions.json_path),
                "ground_truth": str(ground_truth.json_path),
            },
        )
    click.echo(format_table(result))
    click.echo(f"wrote {out}", err=True)
