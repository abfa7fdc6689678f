"""The secret-backend interface every backend implements, and the errors it may raise."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import asyncpg


class BackendUnavailable(Exception):
    """The backend cannot serve right now; answered as 503 SERVICE_UNAVAILABLE.

    The message must never contain the secret or any credential.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ReadOnlyBackend(Exception):
    """A write was attempted on a backend whose secret is not set through the API."""


class SecretUnreadable(BackendUnavailable):
    """A secret is stored but cannot be read back (e.g. its encryption key is missing)."""


@dataclass(frozen=True)
class SecretLocation:
    """Where a configuration's secret lives.

    ``owner`` is the configuration id the secret belongs to (binds a ciphertext to its row);
    ``version`` is the backend's own version marker recorded on the row, if it has one.
    """

    owner: str
    version: int | None = None


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str


class SecretBackend(ABC):
    """Keeps one secret per configuration.

    ``conn`` is the PostgreSQL connection of the surrounding write transaction: a backend that
    stores into PostgreSQL uses it so the row and its secret commit together; one that stores
    elsewhere ignores it.
    """

    name: ClassVar[str]
    writable: ClassVar[bool] = True
    # Shown as the hint when a client sends a secret to a backend that is not writable.
    read_only_hint: ClassVar[str | None] = None

    @abstractmethod
    async def read(self, conn: asyncpg.Connection, location: SecretLocation) -> str | None:
        """The stored secret, or None when there is none."""

    @abstractmethod
    async def write(self, conn: asyncpg.Connection, location: SecretLocation, secret: str) -> int | None:
        """Store ``secret``; return the version marker to record on the row (or None)."""

    @abstractmethod
    async def delete(self, conn: asyncpg.Connection, location: SecretLocation) -> None:
        """Remove the secret and every trace of it the backend keeps."""

    @abstractmethod
    async def health(self, conn: asyncpg.Connection) -> Health:
        """Whether the backend can serve, with a detail line safe to show on /readyz."""

    async def start(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Start background work (e.g. keeping a token alive); the default has none."""

    async def purge(self, location: SecretLocation) -> None:  # noqa: B027 - an optional hook, not abstract
        """After a deletion has committed: remove what could not be removed inside the transaction."""

    def has_secret(self, stored: bool) -> bool:
        """Whether a secret is available, given whether the row records one as stored."""
        return stored

    async def close(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Release what the backend holds; the default holds nothing."""
