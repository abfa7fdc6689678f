"""Secret backends: where the Spaces ``secretKey`` is kept.

Each module here other than ``base``, ``errors`` and ``vault_auth`` defines one backend, which
registers itself by name when its module is imported (``SecretBackend.__init_subclass__``).
``available()`` imports them all, so adding a backend is adding a module: the settings, the CLI,
the schemas and the docs' table take their list from here.

The package depends on ``backends.errors`` alone of this repository: importing it loads no web
framework, schema or metrics library.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Mapping

from backends.base import BackendSettings, Health, SecretBackend, SecretLocation, registered
from backends.errors import BackendUnavailable, ConfigError, ReadOnlyBackend, SecretUnreadable

INFRASTRUCTURE = frozenset({"base", "errors", "vault_auth"})  # modules that are not backends


@functools.cache
def _import_backend_modules() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name not in INFRASTRUCTURE and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


def available() -> Mapping[str, type[SecretBackend]]:
    """Every backend, by name (sorted); the first call imports each module of this package."""
    _import_backend_modules()
    return dict(sorted(registered().items()))


def names() -> tuple[str, ...]:
    return tuple(available())


def backend_class(name: str) -> type[SecretBackend]:
    """The backend called ``name``; an unknown name is a configuration error naming the choices."""
    try:
        return available()[name]
    except KeyError:
        raise ConfigError(
            f"SPACESVC_SECRET_BACKEND={name!r} is not a secret backend; choose one of: {', '.join(names())}"
        ) from None


def backend_for(settings: BackendSettings) -> type[SecretBackend]:
    """The backend that ``settings`` configure."""
    for backend in available().values():
        if isinstance(settings, backend.settings_class):
            return backend
    raise TypeError(f"{type(settings).__name__} configures no registered secret backend")


def create_backend(settings: BackendSettings) -> SecretBackend:
    """Build the backend ``settings`` configure (no I/O; ``start()`` begins its background work)."""
    return backend_for(settings)(settings)


__all__ = [
    "BackendSettings",
    "BackendUnavailable",
    "Health",
    "ReadOnlyBackend",
    "SecretBackend",
    "SecretLocation",
    "SecretUnreadable",
    "available",
    "backend_class",
    "backend_for",
    "create_backend",
    "names",
]
