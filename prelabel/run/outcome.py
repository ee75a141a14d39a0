"""What happened to one sample: the one outcome type of every engine and front-end."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: ``labeled``/``skipped``/``dry-run`` come from runs over a dataset, ``predicted`` from
#: ``prelabel predict`` on local files, ``evaluated`` from ``prelabel evaluate --dataset``;
#: ``failed`` from any of them.
Result = Literal["labeled", "skipped", "failed", "dry-run", "predicted", "evaluated"]


@dataclass(frozen=True)
class SampleOutcome:
    """One sample's result, as the report, the summary and the notebook show it.

    ``sample_uuid`` identifies the sample: its Segments uuid, or the file's path for local
    files. ``transient`` marks a failure the server caused (timeouts, 5xx after retries): a
    rerun may well succeed, and several in a row stop the run.
    """

    sample_uuid: str
    sample_name: str
    result: Result
    reason: str | None = None
    segments: int | None = None
    score: float | None = None
    transient: bool = False
    #: Wall time from the sample's start to its outcome.
    seconds: float | None = None
