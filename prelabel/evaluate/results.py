"""A PQ result as a JSON file and as a table for the terminal."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prelabel.errors import ConfigError
from prelabel.evaluate.pq import PQResult
from prelabel.evaluate.sequence import SequenceResult
from prelabel.formats.atomic import atomic_file

__all__ = ["format_table", "write_result"]


def write_result(result: PQResult, path: Path, meta: Mapping[str, Any] | None = None) -> None:
    """Write :meth:`PQResult.as_dict` (after ``meta``, e.g. the inputs) as indented JSON.

    Atomic: written to a temporary file beside ``path`` and moved over it, so a crash never
    leaves a truncated result that a later comparison would read.

    Raises:
        ConfigError: the file cannot be written.
    """
    path = Path(path)
    document = {**(meta or {}), **result.as_dict()}
    try:
        with atomic_file(path, "w") as f:
            json.dump(document, f, indent=2)
            f.write("\n")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write: {exc.strerror or exc}") from None


def format_table(result: PQResult) -> str:
    """A fixed-width text table: one row per category, then All, Things and Stuff.

    PQ, SQ and RQ are percentages with one decimal; ``-`` marks a category that never occurs.
    """
    width = max([len("category"), *(len(c.name) for c in result.per_category)])
    head = f"{'category':<{width}}  {'kind':<5}  {'PQ':>5}  {'SQ':>5}  {'RQ':>5}"
    lines = [f"{head}  {'TP':>6}  {'FP':>6}  {'FN':>6}"]
    lines.append("-" * len(lines[0]))
    for c in result.per_category:
        kind = "thing" if c.is_thing else "stuff"
        lines.append(
            f"{c.name:<{width}}  {kind:<5}  {_pct(c.pq)}  {_pct(c.sq)}  {_pct(c.rq)}  "
            f"{c.tp:>6}  {c.fp:>6}  {c.fn:>6}"
        )
    lines.append("-" * len(lines[0]))
    for label, avg in (("All", result.overall), ("Things", result.things), ("Stuff", result.stuff)):
        lines.append(
            f"{label:<{width}}  {'':<5}  {_pct(avg.pq)}  {_pct(avg.sq)}  {_pct(avg.rq)}  "
            f"{'N=' + str(avg.n):>6}"
        )
    lines.append(f"{result.images} images")
    return "\n".join(lines)


def format_tracking(result: SequenceResult, sequences: int) -> str:
    """The tracking line under a sequence evaluation's table (frames pooled above it)."""
    return (
        f"{sequences} sequences: STQ {_pct(result.stq).strip()}  AQ {_pct(result.aq).strip()}  "
        f"SQ(IoU) {_pct(result.sq).strip()}  mean PQ per frame "
        f"{_pct(result.mean_frame_pq).strip()}  ({result.tracks} ground-truth tracks)"
    )


def _pct(value: float | None) -> str:
    return f"{'-':>5}" if value is None else f"{100 * value:5.1f}"
