"""``prelabel evaluate``: panoptic quality of predictions against human labels.

Local mode only in this build: two COCO-panoptic exports on disk. Nothing is uploaded.
"""

from __future__ import annotations

from pathlib import Path

import click

from prelabel.cli._common import UsageFailure, quiet_option

#: Name of the result file written beside the predictions' JSON unless --out says otherwise.
DEFAULT_RESULT_NAME = "evaluation.json"


@click.command()
@click.option(
    "--predictions",
    "predictions_path",
    type=click.Path(path_type=Path),
    default=None,
    help="COCO-panoptic export to score: a folder with NAME.json and NAME/ (as `prelabel "
    "predict` writes panoptic.json and panoptic/), the JSON file, or its PNG folder.",
)
@click.option(
    "--ground-truth",
    "ground_truth_path",
    type=click.Path(path_type=Path),
    default=None,
    help="COCO-panoptic export of the human labels, in the same layouts. Its categories are "
    "the ones evaluated; both exports must hold the same images (matched by file_name).",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Result JSON. Default: {DEFAULT_RESULT_NAME} beside the predictions' JSON, so the "
    "score stays with the run it scores.",
)
@quiet_option
def evaluate(
    predictions_path: Path | None,
    ground_truth_path: Path | None,
    out_path: Path | None,
    quiet: bool,
) -> None:
    """Score predictions against human labels with panoptic quality (PQ, SQ, RQ).

    COCO panopticapi's definition: a predicted and a labeled segment of one category match at
    IoU > 0.5; unlabeled pixels are ignored. Prints a table (each category, then the means over
    all categories, things and stuff, in percent) and writes the numbers as JSON. Use it to
    tune thresholds and prompts before a run. Exit code 2 for unusable input.

    \b
    Example:
      prelabel predict photos/ --categories cats.yaml --out pred/
      prelabel evaluate --predictions pred/ --ground-truth labels-export/ --out pq.json
    """
    from prelabel.errors import PrelabelError
    from prelabel.evaluate import (
        evaluate_coco_dirs,
        format_table,
        locate_coco_panoptic,
        write_result,
    )
    from prelabel.progress import TqdmProgress

    if predictions_path is None or ground_truth_path is None:
        raise UsageFailure("give both --predictions PATH and --ground-truth PATH")
    try:
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
    except PrelabelError as exc:
        raise UsageFailure(str(exc)) from None
    click.echo(format_table(result))
    click.echo(f"wrote {out}", err=True)
