"""Secret backends: where the Spaces ``secretKey`` is kept.

A backend is chosen by name (``SPACESVC_SECRET_BACKEND``); this package must not import
``spacesvc`` at module level, so the settings module can ask it for the valid names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backends.base import (
    BackendUnavailable,
    Health,
    ReadOnlyBackend,
    SecretBackend,
    SecretLocation,
    SecretUnreadable,
)

if TYPE_CHECKING:
    from spacesvc.settings import Settings

BACKEND_NAMES: tuple[str, ...] = ("db", "env", "vault")


def create_backend(settings: Settings) -> SecretBackend:
    """Build the backend named by the settings (already validated against BACKEND_NAMES)."""
    if settings.secret_backend == "db":
        from backends.db import DbSecretBackend

        return DbSecretBackend(settings.encryption_keys)
    if settings.secret_backend == "env":
        from backends.env import EnvSecretBackend

        return EnvSecretBackend(settings.spaces_secret_key)
    if settings.secret_backend == "vault":
        from backends.vault import VaultSecretBackend

        return VaultSecretBackend(settings.vault)
    raise ValueError(f"unknown secret backend {settings.secret_backend!r}")


__all__ = [
    "BACKEND_NAMES",
    "BackendUnavailable",
    "Health",
    "ReadOnlyBackend",
    "SecretBackend",
    "SecretLocation",
    "SecretUnreadable",
    "create_backend",
]
