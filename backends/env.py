"""The ``env`` backend: the secret is the environment variable ``SPACESVC_SPACES_SECRET_KEY``.

It is read-only through the API: an operator changes the variable and restarts the service.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Self

import asyncpg

from backends.base import BackendSettings, Health, SecretBackend, SecretLocation
from backends.errors import ReadOnlyBackend

SECRET_VARIABLE = "SPACESVC_SPACES_SECRET_KEY"


@dataclass(frozen=True)
class EnvSettings(BackendSettings):
    secret: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, embedded: bool) -> Self:
        return cls(env.get(SECRET_VARIABLE) or None)


class EnvSecretBackend(SecretBackend):
    name: ClassVar[str] = "env"
    summary: ClassVar[str] = f"the environment variable `{SECRET_VARIABLE}`; read-only through the API"
    variables: ClassVar[tuple[str, ...]] = (SECRET_VARIABLE,)
    settings_class: ClassVar[type[BackendSettings]] = EnvSettings
    writable: ClassVar[bool] = False
    read_only_hint: ClassVar[str | None] = (
        f"The secret backend is 'env': set {SECRET_VARIABLE} in the service's environment "
        "and restart it; omit secretKey from the request."
    )

    def __init__(self, settings: EnvSettings) -> None:
        self._secret = settings.secret

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
