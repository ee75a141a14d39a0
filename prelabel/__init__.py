"""prelabel: zero-shot panoptic pre-labels for Segments.ai datasets.

Importing the package is cheap on purpose: torch and transformers load only when a pipeline is
built, so ``prelabel --help`` and the taxonomy tools start fast.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("prelabel")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
