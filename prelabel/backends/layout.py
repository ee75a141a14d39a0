"""Where a back-end's models load from: ``models.<role>`` ids, or ``--models DIR/<role>``.

No torch here: front-ends (the review notebook's saved config) ask where models come from
without loading them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prelabel.config import ModelSettings
from prelabel.errors import ModelLoadError


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
