"""Cheap checks before a command lists a dataset: mistakes that cost seconds, not minutes.

Without them a wrong ``--models`` folder shows up only when the first sample needs a prediction
(after the listing, with a progress bar part-way), an API URL where nothing listens takes half
a minute of retries, and a machine without internet and without ``--models`` waits on the
hub's retries before the model loader's message. The first two are checked before anything
else; the hub when the models are first needed (:class:`CheckedLoader`), so a run with nothing
to predict needs no weights, as before, and usage problems are still reported first.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from prelabel.backends import local_path, offline_env
from prelabel.cli._common import usage_errors
from prelabel.errors import ModelLoadError
from prelabel.run.models import PipelineLoader

if TYPE_CHECKING:
    from prelabel.config import Settings
    from prelabel.pipeline.pipeline import Pipeline

logger = logging.getLogger(__name__)

#: How long the hub gets to accept a connection before the machine counts as offline.
HUB_PROBE_S = 3.0


def check_start(settings: Settings, models_dir: Path | None) -> None:
    """The API listens (:func:`check_api`) and ``--models`` has the models' folders."""
    check_api(settings)
    if models_dir is not None:
        with usage_errors():
            check_models(settings, models_dir)


def check_api(settings: Settings) -> None:
    """Refuse at once an API URL where nothing listens (exit code 2)."""
    from prelabel.segments.transport import check_listening

    with usage_errors():
        check_listening(settings.remote.api_url, settings.remote.connect_timeout_s)


class CheckedLoader(PipelineLoader):
    """A run's model loader that first runs :func:`check_models`, when the models are needed:
    offline without weights then fails at once instead of after the hub's retries, and a run
    with nothing to predict still needs no models."""

    def __call__(self) -> Pipeline:
        if self._pipeline is None:
            check_models(self.settings, self.models_dir)
        return super().__call__()


def checked_loader(settings: Settings, models_dir: Path | None) -> PipelineLoader:
    """:func:`~prelabel.run.models.pipeline_loader` with :class:`CheckedLoader`'s check."""
    return CheckedLoader(settings, models_dir)


def check_models(settings: Settings, models_dir: Path | None) -> None:
    """``--models DIR`` holds the image models' folders; without it, the configured hub ids
    are either in the Hugging Face cache or the hub answers.

    A machine where the hub does not answer within :data:`HUB_PROBE_S` and that has the
    models cached is switched to offline mode (``HF_HUB_OFFLINE=1``), so they load without
    the hub's retries.

    Raises:
        ModelLoadError: a folder is missing, or a model is neither cached nor downloadable.
    """
    roles = image_models(settings)
    if models_dir is not None:
        _check_models_dir(models_dir.expanduser(), roles)
        return
    hub_ids = {
        role: source
        for role in roles
        if (source := getattr(settings.models, role, None)) and local_path(source) is None
    }
    if not hub_ids:
        return
    user_offline = offline_env()
    if not user_offline and _hub_answers():
        return
    missing = [f"{role} ({source})" for role, source in hub_ids.items() if not _cached(source)]
    if missing:
        why = "HF_HUB_OFFLINE is set" if user_offline else "huggingface.co does not answer"
        raise ModelLoadError(
            f"no model weights for {', '.join(missing)}: this machine is offline ({why}) "
            f"and they are not in the Hugging Face cache ({_cache_dir()}). Pass --models DIR, "
            f"a folder with {', '.join(f'{r}/' for r in roles)} (`prelabel models tiny "
            "DIR` writes tiny ones for a trial; README: Models and weights), or fill the cache on "
            "a machine with internet (`hf download ID`) and copy it here."
        )
    if not user_offline:
        logger.warning(
            "huggingface.co did not answer within %.0f s: loading models from the Hugging "
            "Face cache only (as with HF_HUB_OFFLINE=1)",
            HUB_PROBE_S,
        )
        os.environ["HF_HUB_OFFLINE"] = "1"


def image_models(settings: Settings) -> tuple[str, ...]:
    """The configured back-end's models, by their folder under --models (sam2_video/ is only
    for image sequences, so it is not required here)."""
    from prelabel.backends import backend_spec

    with usage_errors():
        return backend_spec(settings.models.backend).model_roles


def _check_models_dir(models_dir: Path, roles: tuple[str, ...]) -> None:
    layout = (
        f"Expected: {models_dir}/{{{','.join(roles)}}}/ (and sam2_video/ for image "
        "sequences), as `prelabel models tiny DIR` writes them (README: Models and weights)."
    )
    if not models_dir.is_dir():
        raise ModelLoadError(f"--models {models_dir} is not a directory. {layout}")
    missing = [f"{role}/" for role in roles if not (models_dir / role).is_dir()]
    if missing:
        raise ModelLoadError(f"--models {models_dir} lacks {', '.join(missing)}. {layout}")


def _hub_answers() -> bool:
    """Whether the hub (``HF_ENDPOINT``, default huggingface.co) accepts a TCP connection."""
    parts = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=HUB_PROBE_S).close()
    except OSError:
        return False
    return True


def _cache_dir() -> Path:
    """The Hugging Face hub cache, as huggingface_hub resolves it."""
    explicit = os.environ.get("HF_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface"
    )
    return Path(home).expanduser() / "hub"


def _cached(hub_id: str) -> bool:
    """Whether a snapshot of ``hub_id`` with a config.json is in the cache."""
    folder = _cache_dir() / f"models--{hub_id.replace('/', '--')}" / "snapshots"
    return any(folder.glob("*/config.json"))
