"""Where a back-end's models load from: ``models.<role>`` ids, or ``--models DIR/<role>``.

No torch and no huggingface_hub here: front-ends (the review notebook's saved config, the CLI's
start-up checks) ask where models come from without loading them. The rules of what counts as a
local folder and when the hub is switched off live here once, so the loader
(:mod:`prelabel.backends.loading`) and the CLI's check before the run cannot disagree.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from prelabel.config import ModelSettings
from prelabel.errors import ModelLoadError

#: What a Hugging Face hub id looks like: ``name`` or ``org/name``.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")

#: Values of an environment switch that mean "on", as huggingface_hub reads them.
_TRUE = {"1", "ON", "YES", "TRUE"}

#: The variables that switch hub access off.
_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def local_path(source: str) -> Path | None:
    """A local path for ``source``, or None when it can only be a hub id.

    Anything that exists on disk, or cannot be a hub id (absolute, ``./``, ``~``, more than one
    slash), is a path; a missing relative ``a/b`` is ambiguous and is tried as a hub id, with the
    loader's error message mentioning both readings.
    """
    path = Path(source).expanduser()
    if path.exists() or not _HUB_ID.match(source):
        return path
    return None


def offline_env() -> bool:
    """Whether ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set to a true value now.

    Read from the environment at each call, not at import: a variable set later (a notebook
    cell, a test's monkeypatch, the CLI's own switch when the hub does not answer) still counts.
    """
    return any((os.environ.get(name) or "").strip().upper() in _TRUE for name in _OFFLINE_VARIABLES)


def model_sources(
    settings: ModelSettings, roles: Sequence[str], models_dir: Path | None
) -> dict[str, str]:
    """Say where each of ``roles`` loads from: ``models_dir/<role>`` if given, else the
    configured id (``models.<role>``).

    With ``models_dir`` every subdirectory must exist; a missing one is an error listing all that
    are missing and the expected layout, so a half-copied folder never falls back to the hub.
    """
    if models_dir is None:
        return {role: getattr(settings, role) for role in roles}
    models_dir = models_dir.expanduser()
    if not models_dir.is_dir():
        raise ModelLoadError(f"--models {models_dir} is not a directory.\n{layout_hint(roles)}")
    missing = [sub for sub in roles if not (models_dir / sub).is_dir()]
    if missing:
        raise ModelLoadError(
            f"--models {models_dir} lacks the subdirector{'y' if len(missing) == 1 else 'ies'} "
            f"{', '.join(missing)}.\n{layout_hint(roles)}"
        )
    return {role: str(models_dir / role) for role in roles}


def layout_hint(layout: Sequence[str]) -> str:
    """The ``--models DIR`` layout a back-end expects, for error messages."""
    return (
        f"Expected layout: DIR/{{{','.join(layout)}}}/, each holding config.json, "
        "model.safetensors and the processor files, as `prelabel models tiny DIR` writes them "
        "or as save_pretrained writes a model and its processor."
    )
