"""The versioned-resource core: what every resource with a version (and an ETag) needs, once.

A resource is declared with ``VersionedResource``: its name (the word its change notifications
carry and the live state keeps it under), its table (whose ``version`` column counts its
changes), its advisory lock, its audit ``resourceType`` and how to read it. Its package then
writes like this, inside one transaction::

    async with RESOURCE.locked(conn) as current:      # the lock, then the current row
        preconditions.check(current, RESOURCE)         # If-Match / If-None-Match: *
        ...                                            # the resource's own SQL
        await RESOURCE.changed(conn, row)              # NOTIFY "<name> <id> <version>"
        await RESOURCE.audit(conn, action, row.id, actor, details)

A change to something the resource's representation includes (a child row) is
``RESOURCE.bump(conn, actor)``: version + 1 and the notification. The HTTP side keeps the
process's copy fresh with ``LiveState.writing(RESOURCE)`` (``spacesvc.live``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import asyncpg

from spacesvc import changes
from spacesvc.audit import model as audit_trail
from spacesvc.audit import queries as audit
from spacesvc.audit.model import Actor
from spacesvc.errors import PreconditionFailed


class Versioned(Protocol):
    """What the core reads of a resource's value: its id and its version (the ETag)."""

    @property
    def id(self) -> str: ...

    @property
    def version(self) -> int: ...


T = TypeVar("T", bound=Versioned)


@dataclass(frozen=True)
class VersionedResource(Generic[T]):
    """One kind of versioned resource (see the module's docstring)."""

    name: str  # the change notifications' word, and the live state's key
    table: str  # its row: id, version, updated_at, updated_by
    lock_id: int  # the transaction-scoped advisory lock every write takes
    audit_type: str  # the audit trail's resourceType
    title: str  # how messages name it: "The Spaces configuration"
    noun: str  # and how hints do: "the configuration"
    absent: str  # what a message says when there is none: "nothing is configured"
    load: Callable[[asyncpg.Connection], Awaitable[T | None]]
    actions: tuple[str, ...] = ()  # audit actions of its own, beyond the built-in ones

    def __post_init__(self) -> None:
        audit_trail.register(self.audit_type, self.actions)

    # -- the write lock -----------------------------------------------------------------------------

    @property
    def lock_sql(self) -> str:
        """Takes the write lock, as SQL (for a write done in one statement)."""
        return f"SELECT pg_advisory_xact_lock({self.lock_id})"

    async def lock(self, conn: asyncpg.Connection) -> T | None:
        """Inside the caller's transaction: wait for the write lock, then read the value it guards."""
        await conn.execute(self.lock_sql)
        return await self.load(conn)

    @asynccontextmanager
    async def locked(self, conn: asyncpg.Connection) -> AsyncIterator[T | None]:
        """A transaction holding the write lock, with the value as it is under it (None: none)."""
        async with conn.transaction():
            yield await self.lock(conn)

    # -- the version and the change notification ----------------------------------------------------

    def notification_sql(self, alias: str) -> str:
        """The notification of a change that left row ``alias`` at its version, built in SQL."""
        return changes.at_sql(self.name, alias)

    async def changed(self, conn: asyncpg.Connection, value: T | None = None) -> None:
        """In the change's transaction: tell every process (delivered at commit) that the resource
        changed, leaving ``value`` (None: deleted, or not known here)."""
        payload = self.name if value is None else changes.at(self.name, value.id, value.version)
        await changes.notify(conn, payload)

    async def bump(self, conn: asyncpg.Connection, actor: Actor) -> None:
        """A change of something the representation includes: the version moves on, and every
        process is told. Call it holding the lock; without a row it does nothing."""
        payload = await conn.fetchval(
            f"UPDATE {self.table} SET version = version + 1, updated_at = now(), updated_by = $1 "
            f"RETURNING {changes.at_sql(self.name, self.table)}",
            actor.name,
        )
        if payload is not None:
            await changes.notify(conn, payload)

    # -- the audit trail ------------------------------------------------------------------------------

    async def audit(
        self, conn: asyncpg.Connection, action: str, resource_id: str, actor: Actor, details: dict[str, Any]
    ) -> None:
        await audit.record(conn, action, self.audit_type, resource_id, actor, details)


@dataclass(frozen=True)
class Preconditions:
    """``If-Match`` (a version) and ``If-None-Match: *`` (create only)."""

    if_match: int | None = None
    create_only: bool = False

    def check(self, current: Versioned | None, resource: VersionedResource[Any]) -> None:
        if self.create_only and current is not None:
            raise PreconditionFailed(
                f"{resource.title} exists already (If-None-Match: *).",
                hint="Drop If-None-Match to replace it, or send If-Match with its current version.",
            )
        if self.if_match is not None and (current is None or current.version != self.if_match):
            found = resource.absent if current is None else f"the current version is {current.version}"
            raise PreconditionFailed(
                f"If-Match expected version {self.if_match}, but {found}.",
                hint=f"Re-read {resource.noun} (GET) and retry with its ETag.",
            )


UNCONDITIONAL = Preconditions()
