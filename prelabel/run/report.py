"""Per-sample outcomes of a run: counted in memory, listed in a JSON file as they happen.

The JSON report is streamed (one outcome written per sample, the summary at the end) so a run
over 100k samples keeps memory flat, and it is valid JSON only once closed: a killed run leaves
``report.json.partial`` and no misleading complete-looking report.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from prelabel.formats.atomic import atomic_file
from prelabel.run.outcome import SampleOutcome


@dataclass
class RunSummary:
    """Counts by result and by (result, reason); what the CLI's table and exit code use."""

    counts: Counter[str] = field(default_factory=Counter)
    reasons: Counter[tuple[str, str]] = field(default_factory=Counter)
    report_path: Path | None = None
    #: Stopped by a signal before every selected sample was done.
    interrupted: bool = False
    #: Samples left for the next run when interrupted (``None``: not known, e.g. a stream).
    remaining: int | None = None

    def add(self, outcome: SampleOutcome) -> None:
        self.counts[outcome.result] += 1
        if outcome.reason:
            self.reasons[(outcome.result, _reason_key(outcome.reason))] += 1

    @property
    def failed(self) -> int:
        return self.counts["failed"]

    def as_dict(self) -> dict[str, object]:
        return {
            "counts": dict(self.counts),
            "reasons": [
                {"result": result, "reason": reason, "count": count}
                for (result, reason), count in self.reasons.most_common()
            ],
        }


def _reason_key(reason: str) -> str:
    """Group reasons in the summary table: the first clause, without sample-specific detail."""
    return reason.split(":")[0][:80]


#: The version of report.json's schema, its first key: ``run``, ``sync``, ``serve`` and
#: ``predict`` write the same schema (README, "report.json").
REPORT_VERSION = 1


class ReportWriter:
    """Streams outcomes into ``path``: a JSON object with ``version``, the caller's header keys,
    ``samples`` (one :class:`~prelabel.run.outcome.SampleOutcome` each) and ``summary``."""

    def __init__(self, path: Path, header: dict[str, object]) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writing = atomic_file(path, "w", temp=path.with_name(path.name + ".partial"))
        self._file: IO[Any] = self._writing.__enter__()
        document = {"version": REPORT_VERSION, **header}
        self._file.write(json.dumps(document)[:-1] + ', "samples": [\n')
        self._first = True

    def add(self, outcome: SampleOutcome) -> None:
        if not self._first:
            self._file.write(",\n")
        self._first = False
        self._file.write(json.dumps(asdict(outcome)))
        self._file.flush()

    def write_all(self, outcomes: Iterable[SampleOutcome]) -> Path:
        """Every outcome, then the summary of them: a report written at once."""
        summary = RunSummary()
        for outcome in outcomes:
            summary.add(outcome)
            self.add(outcome)
        return self.close(summary)

    def close(self, summary: RunSummary) -> Path:
        """The summary, then whether a signal stopped the command and how many samples it
        left (``null``: not known), so a report read later tells a finished run from one a
        rerun must finish."""
        ending = {
            "summary": summary.as_dict(),
            "interrupted": summary.interrupted,
            "remaining": summary.remaining,
        }
        self._file.write("\n], " + json.dumps(ending)[1:] + "\n")
        self._writing.__exit__(None, None, None)
        return self.path
