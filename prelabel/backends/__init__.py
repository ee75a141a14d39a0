"""Model back-ends behind one seam: the registry and :func:`load_backend`.

Every front-end and engine gets its models through :func:`load_backend`; nothing outside a
back-end's package names a model. A back-end is a package under ``prelabel/backends/`` that
exports ``SPEC`` (a :class:`~prelabel.backends.base.BackendSpec`) and
``create(settings, models_dir) -> Backend``; adding one means writing that package and one
line in :data:`_LOADERS`. Importing this module loads no model and no torch, so config
checks (:func:`option_reader`) are cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from prelabel.backends import grounded_sam, layout, sam3
from prelabel.backends.base import BackendSpec
from prelabel.backends.layout import local_path, offline_env
from prelabel.errors import ConfigError
from prelabel.taxonomy import OptionReader

if TYPE_CHECKING:
    from prelabel.backends.base import Backend
    from prelabel.config import Settings

__all__ = [
    "BackendSpec",
    "backend_spec",
    "load_backend",
    "local_path",
    "model_sources",
    "offline_env",
    "option_reader",
]

#: Back-end name -> its package's spec and ``create`` (which imports torch only when called).
_LOADERS: dict[str, tuple[BackendSpec, Callable[[Settings, Path | None], Backend]]] = {
    grounded_sam.SPEC.name: (grounded_sam.SPEC, grounded_sam.create),
    sam3.SPEC.name: (sam3.SPEC, sam3.create),
}

#: Back-ends whose name and options are fixed but whose loader is not wired in yet (none now;
#: a name reserved here is refused with a clear error until its package lands).
_RESERVED: dict[str, BackendSpec] = {}

_SPECS: dict[str, BackendSpec] = {name: spec for name, (spec, _) in _LOADERS.items()} | _RESERVED


def backend_names() -> tuple[str, ...]:
    """Every name ``models.backend`` accepts."""
    return tuple(_SPECS)


def backend_spec(name: str) -> BackendSpec:
    """The spec of back-end ``name``; a :class:`ConfigError` listing the names for any other."""
    try:
        return _SPECS[name]
    except KeyError:
        raise ConfigError(
            f"unknown models.backend {name!r}: use {', '.join(backend_names())}"
        ) from None


def option_reader(settings: Settings) -> OptionReader:
    """What the configured back-end reads of the categories' options (for build_taxonomy).

    Called where a run checks its dataset, so an unknown or unavailable ``models.backend``
    stops the run there, before any sample, rather than at the first model load.
    """
    return _available(backend_spec(settings.models.backend)).option_reader()


def model_sources(settings: Settings, models_dir: Path | None) -> dict[str, str]:
    """Where each model of the configured back-end loads from (``models.<role>`` ids, or
    ``models_dir/<role>``, which must exist), without loading anything."""
    roles = backend_spec(settings.models.backend).model_roles
    return layout.model_sources(settings.models, roles, models_dir)


def load_backend(settings: Settings, models_dir: Path | None = None) -> Backend:
    """Load the configured back-end's models (``models.*`` ids, or ``models_dir``'s layout).

    The one place models are loaded for images; raises :class:`ConfigError` for an unknown or
    not yet available back-end and :class:`~prelabel.errors.ModelLoadError` for missing weights.
    """
    spec = _available(backend_spec(settings.models.backend))
    _, create = _LOADERS[spec.name]
    return create(settings, models_dir)


def _available(spec: BackendSpec) -> BackendSpec:
    if spec.name not in _LOADERS:
        raise ConfigError(
            f"models.backend {spec.name!r} is reserved but not available in this version "
            f"of prelabel; use {', '.join(_LOADERS)}"
        )
    return spec
