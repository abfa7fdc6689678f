"""The secret-backend interface every backend implements and the registry that every backend
joins by subclassing ``SecretBackend``; the errors it may raise are in ``backends.errors``.

Calls are counted where the service composes its resources (``spacesvc.secret_backend``), by
wrapping the chosen backend: nothing here knows the service's metrics."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import asyncpg


@dataclass(frozen=True)
class SecretLocation:
    """Where a configuration's secret lives.

    ``owner`` is the id of the row the secret belongs to (binds a ciphertext to its row);
    ``version`` is the backend's own version marker recorded on the row, if it has one;
    ``slot`` names a secret kept beside the configuration's (a key issuer's, a minted key's):
    None is the configuration's own. A backend keeps each slot apart (Vault: a path below its own).
    """

    owner: str
    version: int | None = None
    slot: str | None = None


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str


class BackendSettings:
    """A backend's own configuration: a frozen dataclass in the backend's module, read from the
    environment by ``from_env``, which raises ``ConfigError`` naming the variable at fault."""

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, embedded: bool) -> Self:
        """``embedded``: the database is the embedded default (SPACESVC_DATABASE_URL unset)."""
        raise NotImplementedError

    def for_embedded(self, data_dir: Path) -> Self:
        """With the embedded database: fill in what the data directory provides (the default: nothing)."""
        return self


_REGISTRY: dict[str, type[SecretBackend]] = {}


class SecretBackend(ABC):
    """Keeps one secret per configuration.

    A subclass that sets ``name`` registers itself under it: that name is what
    SPACESVC_SECRET_BACKEND selects, what a configuration row records, and what the docs list.
    It reads its own variables (``settings_class.from_env``) and is built from those settings.

    ``conn`` is the PostgreSQL connection of the surrounding write transaction: a backend that
    stores into PostgreSQL uses it so the row and its secret commit together; one that stores
    elsewhere ignores it.
    """

    name: ClassVar[str]
    # One line for the docs: where the secret lives.
    summary: ClassVar[str]
    # The variables the backend reads (docs/configuration.md describes each).
    variables: ClassVar[tuple[str, ...]]
    settings_class: ClassVar[type[BackendSettings]]
    writable: ClassVar[bool] = True
    # Whether the secret changes only with the configuration's version (a new version is a new
    # write through this service), so a process may keep what it read for the whole version
    # (``secret_kept_seconds``).
    secret_follows_version: ClassVar[bool] = False
    # Shown as the hint when a client sends a secret to a backend that is not writable.
    read_only_hint: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if name is None:
            return
        registered = _REGISTRY.get(name)
        if registered is not None and registered.__qualname__ != cls.__qualname__:
            raise TypeError(f"two secret backends are named {name!r}: {registered.__qualname__} and {cls.__qualname__}")
        _REGISTRY[name] = cls

    @abstractmethod
    def __init__(self, settings: Any) -> None:
        """Build the backend from its ``settings_class`` instance; does no I/O."""

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

    @property
    def secret_kept_seconds(self) -> float:
        """How long a process may deliver a secret it read for a configuration version without
        reading it again: for ever where the secret follows the version; a backend others can
        change or revoke behind the service's back keeps it no longer than a bound its docs state
        (0: read on every delivery)."""
        return math.inf if self.secret_follows_version else 0.0

    def has_secret(self, stored: bool) -> bool:
        """Whether a secret is available, given whether the row records one as stored."""
        return stored

    async def close(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Release what the backend holds; the default holds nothing."""

    def token_seconds_left(self) -> float | None:
        """Seconds left on the credential the backend holds, if it holds one that expires (metrics)."""
        return None


def registered() -> Mapping[str, type[SecretBackend]]:
    """The backends registered so far, by name (``backends.available()`` loads them all first)."""
    return _REGISTRY
