"""``prelabel models``: prepare model directories for ``--models DIR`` without the hub."""

from __future__ import annotations

from pathlib import Path

import click

from prelabel.cli._common import CONTEXT_SETTINGS, UsageFailure


@click.group("models", context_settings=CONTEXT_SETTINGS)
def models() -> None:
    """Prepare model weights for offline use.

    Every command that runs models takes --models DIR: a directory with grounding_dino/, sam/
    and clipseg/ (sam3/ for models.backend: sam3), each holding a model and its processor saved
    with save_pretrained, and for image sequences sam2_video/ (a SAM 2 video model saved with
    save_pretrained).

    \b
    Example:
      prelabel models tiny models-tiny
      prelabel models convert-sam sam_vit_h_4b8939.pth models/sam
    """


@models.command("tiny", context_settings=CONTEXT_SETTINGS)
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the random weights.")
def tiny(out_dir: Path, seed: int) -> None:
    """Write tiny random-weight models of every back-end to OUT_DIR.

    They use the real classes, processors and tokenizers (built offline) and load like real
    weights, so they exercise the whole pipeline in seconds on a CPU. Their masks are
    meaningless: use them for tests and smoke runs only.

    \b
    Example:
      prelabel models tiny models-tiny
      prelabel predict photos/ --categories cats.yaml --out out/ --models models-tiny
    """
    from prelabel.errors import PrelabelError
    from prelabel.weights.tiny import TINY_SUBDIRS, write_tiny_models

    try:
        written = write_tiny_models(out_dir, seed=seed)
    except PrelabelError as exc:
        raise UsageFailure(str(exc)) from None
    except OSError as exc:
        raise UsageFailure(f"cannot write {out_dir}: {exc.strerror or exc}") from None
    for sub in TINY_SUBDIRS:
        click.echo(f"wrote {written / sub}")
    click.secho(
        f"tiny random-weight models (seed {seed}): masks are meaningless; "
        f"use --models {written} for tests and smoke runs only",
        fg="yellow",
        err=True,
    )


@models.command("convert-sam", context_settings=CONTEXT_SETTINGS)
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
def convert_sam(checkpoint: Path, out_dir: Path) -> None:
    """Convert an original segment-anything CHECKPOINT (.pth) into a transformers SAM OUT_DIR.

    The variant (vit_b, vit_l, vit_h) is detected from the weights; nothing is downloaded.
    OUT_DIR can serve as the sam/ subdirectory of --models DIR, or as models.sam in the config.

    \b
    Example:
      prelabel models convert-sam sam_vit_h_4b8939.pth models/sam
    """
    from prelabel.backends.grounded_sam.convert_sam import convert_sam_checkpoint
    from prelabel.errors import PrelabelError

    try:
        variant = convert_sam_checkpoint(checkpoint, out_dir)
    except PrelabelError as exc:
        raise UsageFailure(str(exc)) from None
    except OSError as exc:
        raise UsageFailure(f"cannot write {out_dir}: {exc.strerror or exc}") from None
    click.echo(f"converted {checkpoint} (SAM {variant}) -> {out_dir}")
