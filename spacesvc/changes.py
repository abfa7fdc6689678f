"""Change notifications: every change that in-memory reads depend on tells every process, with
``NOTIFY spacesvc_changes`` in its own transaction (delivered when it commits). ``spacesvc.live``
listens.

A payload names what changed: a versioned resource's name (``spacesvc.resources.versioned``),
optionally with the id and version the change left it at (``"<name> <id> <version>"``), or
``tokens``."""

from __future__ import annotations

from typing import NamedTuple

import asyncpg

CHANNEL = "spacesvc_changes"
TOKENS = "tokens"
NOTIFY = f"SELECT pg_notify('{CHANNEL}', $1)"


class Change(NamedTuple):
    """What a payload says: the name, and the (id, version) the change left, if it says."""

    name: str
    id: str | None = None
    version: int | None = None


def at(name: str, resource_id: str, version: int) -> str:
    """The payload of a change that left ``name``'s ``resource_id`` at ``version``."""
    return f"{name} {resource_id} {version}"


def at_sql(name: str, alias: str) -> str:
    """The same payload, built in SQL from row ``alias``'s id and version."""
    return f"'{name} ' || {alias}.id::text || ' ' || {alias}.version::text"


def parse(payload: str) -> Change:
    name, _, rest = payload.partition(" ")
    resource_id, _, version = rest.partition(" ")
    if not version.isdigit():
        return Change(name)
    return Change(name, resource_id, int(version))


async def notify(conn: asyncpg.Connection, *what: str) -> None:
    """Inside a change's transaction: tell every process what to drop (delivered at commit)."""
    for payload in what:
        await conn.execute(NOTIFY, payload)
