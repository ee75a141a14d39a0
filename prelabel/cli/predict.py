"""``prelabel predict``: local mode over image files and folders."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from prelabel.cli._common import (
    CONTEXT_SETTINGS,
    UsageFailure,
    config_option,
    device_option,
    load_cli_settings,
    models_option,
    output_dir_option,
    quiet_option,
    usage_errors,
)
from prelabel.cli._preflight import check_models
from prelabel.cli._stops import exit_interrupted

if TYPE_CHECKING:
    from prelabel.config import Settings
    from prelabel.local import LocalReport
    from prelabel.taxonomy import Taxonomy


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--categories",
    "categories_path",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Categories YAML: `categories: [{id, name, has_instances, color}]` plus optional "
    "`prompt`, thresholds and `ignore` per category (see configs/).",
)
@output_dir_option("Output folder (created if missing).", default=None)
@click.option(
    "--sequence",
    is_flag=True,
    help="Each PATH is a folder of frames (sorted by name) forming one image sequence: "
    "objects are tracked with SAM 2 across frames and keep one id (see README, Image "
    "sequences). Writes OUT/NAME/bitmaps, labels, overlays (colours follow the track) and "
    "tracks.json per folder.",
)
@click.option(
    "--format",
    "label_format",
    type=click.Choice(["bitmap", "bboxes", "vector"]),
    default="bitmap",
    show_default=True,
    help="What each image's label is: a Segments bitmap, or the label JSON of a `bboxes` "
    "(one box per object) or `vector` (polygons) dataset, with a COCO-instance export "
    "instances.json instead of panoptic.json (see README, Box and polygon datasets).",
)
@models_option
@config_option
@device_option
@quiet_option
def predict(
    paths: tuple[Path, ...],
    categories_path: Path,
    output_dir: Path,
    sequence: bool,
    label_format: str,
    models_dir: Path | None,
    config_path: Path | None,
    device: str | None,
    quiet: bool,
) -> None:
    """Pre-label image files and folders locally, no Segments.ai account needed.

    Writes per image bitmaps/NAME.png (Segments RGBA id bitmap), labels/NAME.json
    (annotations, score, segments) and overlays/NAME.png (preview); for the run a
    COCO-panoptic export (panoptic/ and panoptic.json) and report.json. With --format
    bboxes or vector, labels/NAME.json is the box or polygon label instead, overlays outline
    the shapes, and the export is COCO-instance (instances.json, a score per object). An image that
    cannot be read is reported with its reason and the run goes on; the exit code is 1
    when any image failed, 130 when stopped by Ctrl-C or SIGTERM (the image in flight is
    finished and report.json lists what was done; a second Ctrl-C stops at once).

    \b
    Example:
      prelabel models tiny models-tiny
      prelabel predict photos/ --categories configs/street-scene-categories.yaml \\
          --out out/ --models models-tiny
      prelabel predict --sequence drive-01/ drive-02/ --categories cats.yaml --out out/
    """
    from prelabel.backends import load_backend, option_reader
    from prelabel.images import find_images
    from prelabel.local import predict_files
    from prelabel.pipeline.pipeline import Pipeline
    from prelabel.progress import TqdmProgress
    from prelabel.run.sync import StopSignal
    from prelabel.taxonomy import build_taxonomy, load_categories_file

    if sequence and label_format != "bitmap":
        raise UsageFailure(
            f"--format {label_format} takes image files; --sequence writes bitmaps only "
            "(box and polygon sequences: `prelabel run` on an image-vector-sequence dataset)"
        )
    settings = load_cli_settings(config_path, device=device)
    with usage_errors():
        check_models(settings, models_dir)
    out_dir = output_dir
    with usage_errors():
        categories, options = load_categories_file(categories_path)
        taxonomy = build_taxonomy(
            categories,
            {**options, **settings.categories},
            settings.pipeline,
            reader=option_reader(settings),
        )
    if sequence:
        _predict_sequences(paths, taxonomy, out_dir, settings, models_dir, quiet)
        return
    with usage_errors():
        files = find_images(list(paths))
        if not files:
            raise UsageFailure(f"no image files found in {', '.join(map(str, paths))}")
        pipeline = Pipeline(load_backend(settings, models_dir), settings.pipeline)
    with StopSignal(hard_second=True).installed() as stop, usage_errors():
        report = predict_files(
            files,
            pipeline=pipeline,
            taxonomy=taxonomy,
            out_dir=out_dir,
            progress=TqdmProgress(disable=quiet),
            should_stop=stop.is_set,
            label_format=label_format,
            vector=settings.vector,
        )
    _finish(report, "images", out_dir)


def _predict_sequences(
    paths: tuple[Path, ...],
    taxonomy: Taxonomy,
    out_dir: Path,
    settings: Settings,
    models_dir: Path | None,
    quiet: bool,
) -> None:
    from prelabel.local_sequences import predict_sequences
    from prelabel.progress import TqdmProgress
    from prelabel.run.models import pipeline_loader
    from prelabel.run.sync import StopSignal

    with usage_errors():
        folders = [p for p in paths if p.is_dir()]
        if len(folders) != len(paths):
            files = ", ".join(str(p) for p in paths if not p.is_dir())
            raise UsageFailure(f"--sequence takes folders of frames; not a folder: {files}")
        pipeline = pipeline_loader(settings, models_dir).sequence()
    with StopSignal(hard_second=True).installed() as stop, usage_errors():
        report = predict_sequences(
            folders,
            pipeline=pipeline,
            taxonomy=taxonomy,
            out_dir=out_dir,
            max_pixels=settings.pipeline.max_image_pixels,
            progress=TqdmProgress(disable=quiet),
            should_stop=stop.is_set,
        )
    _finish(report, "sequences", out_dir)


def _finish(report: LocalReport, what: str, out_dir: Path) -> None:
    """Name every failure, count the rest; exit 130 when a signal stopped it (predict keeps
    no resume state: a rerun predicts every file again), else 1 when anything failed."""
    for failure in report.failed:
        click.echo(f"failed: {failure.sample_uuid}: {failure.reason}", err=True)
    click.echo(
        f"{len(report.succeeded)} of {len(report.outcomes)} {what} pre-labeled -> {out_dir}",
        err=True,
    )
    exit_interrupted(
        report.summary,
        f"{{left}} {what} not predicted; rerun the same command to predict every one "
        "(it starts over)",
    )
    if report.failed:
        sys.exit(1)
