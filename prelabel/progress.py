"""Progress reporting, injected: library code takes a :class:`Progress`, never builds a bar.

The CLI passes :class:`TqdmProgress`, a notebook can pass one built on ``tqdm.auto``, tests pass
a bar writing to a ``StringIO``; the default is :class:`NullProgress`.
"""

from __future__ import annotations

import sys
from typing import Protocol, TextIO

from tqdm import tqdm


class Progress(Protocol):
    def start(self, total: int | None, description: str) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def note(self, **fields: object) -> None: ...

    def close(self) -> None: ...


class NullProgress:
    """Reports nothing."""

    def start(self, total: int | None, description: str) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def note(self, **fields: object) -> None:
        pass

    def close(self) -> None:
        pass


class TqdmProgress:
    """A tqdm bar created when work starts (so nothing is drawn for an empty run).

    ``min_total``: runs shorter than this draw no bar; a bar for two images is noise.
    """

    def __init__(self, *, file: TextIO | None = None, min_total: int = 4, disable: bool = False):
        self._file = file
        self._min_total = min_total
        self._disable = disable
        self._bar: tqdm | None = None

    def start(self, total: int | None, description: str) -> None:
        hidden = self._disable or (total is not None and total < self._min_total)
        self._bar = tqdm(
            total=total,
            desc=description,
            unit="img",
            file=self._file or sys.stderr,
            disable=hidden,
            dynamic_ncols=True,
        )

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def note(self, **fields: object) -> None:
        if self._bar is not None:
            self._bar.set_postfix(fields, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
