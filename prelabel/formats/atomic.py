"""The one way prelabel writes a file that others read: never half-written under its name.

Everything is written to a temporary file beside the target and moved over it with
``os.replace`` (atomic on POSIX and Windows), so a crash or ``kill -9`` leaves either the old
file or the new one, never a truncated file that a later run or a comparison would trust.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_file(path: Path, mode: str = "w", *, temp: Path | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on success move it over ``path``, else delete it.

    ``temp`` names the temporary file (a streamed report uses ``report.json.partial`` so a
    killed run leaves a file whose name says it is incomplete); by default a unique hidden name
    beside ``path`` is used. ``mode`` is ``"w"`` (UTF-8 text) or ``"wb"``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if temp is None:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        handle = os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8")
        tmp = Path(tmp_name)
    else:
        tmp = temp
        handle = tmp.open(mode, encoding=None if "b" in mode else "utf-8")
    try:
        with handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, data: object, *, indent: int | None = 2) -> None:
    """``json.dump`` through :func:`atomic_file`, with a trailing newline."""
    with atomic_file(path, "w") as f:
        json.dump(data, f, indent=indent)
        f.write("\n")
