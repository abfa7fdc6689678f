"""The ``env`` backend: the secret is the environment variable ``SPACESVC_SPACES_SECRET_KEY``.

It is read-only through the API: an operator changes the variable and restarts the service.
"""

from __future__ import annotations

from typing import ClassVar

import asyncpg

from backends.base import Health, ReadOnlyBackend, SecretBackend, SecretLocation

SECRET_VARIABLE = "SPACESVC_SPACES_SECRET_KEY"


class EnvSecretBackend(SecretBackend):
    name: ClassVar[str] = "env"
    writable: ClassVar[bool] = False
    read_only_hint: ClassVar[str | None] = (
        f"The secret backend is 'env': set {SECRET_VARIABLE} in the service's environment "
        "and restart it; omit secretKey from the request."
    )

    def __init__(self, secret: str | None) -> None:
        self._secret = secret

    async def read(self, conn: asyncpg.Connection, location: SecretLocation) -> str | None:
        return self._secret

    async def write(self, conn: asyncpg.Connection, location: SecretLocation, secret: str) -> int | None:
        raise ReadOnlyBackend(self.read_only_hint)

    async def delete(self, conn: asyncpg.Connection, location: SecretLocation) -> None:
        """Nothing to remove: the variable belongs to the service's environment."""

    async def health(self, conn: asyncpg.Connection) -> Health:
        if self._secret is None:
            return Health(True, f"{SECRET_VARIABLE} is not set (hasSecretKey is false)")
        return Health(True, f"{SECRET_VARIABLE} is set")

    def has_secret(self, stored: bool) -> bool:
        return self._secret is not None
