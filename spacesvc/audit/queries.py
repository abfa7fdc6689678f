"""The audit trail's SQL: recording an entry (inside the caller's transaction), reading it newest
first with a cursor and filters, and sweeping entries past their retention."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import orjson

from spacesvc.audit.model import Action, Actor, AuditEntry, Resource

# An entry's columns, for an INSERT with VALUES or with a SELECT (spaces.queries.FAST_UPDATE)
INSERT_FROM = "INSERT INTO audit_log (action, resource_type, resource_id, actor, request_id, details)"
INSERT_ENTRY = f"{INSERT_FROM} VALUES ($1, $2, $3, $4, $5, $6::jsonb)"
SELECT_ENTRIES = """
SELECT id, at, action, resource_type, resource_id, actor, request_id, details::text AS details
FROM audit_log
WHERE ($1::bigint IS NULL OR id < $1)
  AND ($2::text IS NULL OR resource_type = $2)
  AND ($3::text IS NULL OR action = $3)
ORDER BY id DESC
LIMIT $4
"""
# A credential delivery, recorded with the environment's name, if the environment still exists.
INSERT_DELIVERY = f"""
{INSERT_FROM}
SELECT '{Action.DELIVERED.value}', '{Resource.CREDENTIALS.value}', e.id::text, $2, $3,
       jsonb_build_object('environment', e.name, 'token', $4::text, 'version', $5::int)
FROM environments e WHERE e.id = $1::uuid
"""
DELETE_OLDER = "DELETE FROM audit_log WHERE at < now() - $1::interval"


async def record(
    conn: asyncpg.Connection,
    action: Action,
    resource_type: Resource,
    resource_id: str | None,
    actor: Actor,
    details: dict[str, Any] | None = None,
) -> None:
    """Add an entry; call it inside the transaction of the change it records."""
    await conn.execute(
        INSERT_ENTRY,
        action.value,
        resource_type.value,
        resource_id,
        actor.name,
        actor.request_id,
        orjson.dumps(details or {}).decode(),
    )


async def record_delivery(
    conn: asyncpg.Connection, environment_id: str, actor: Actor, token: str, version: int
) -> bool:
    """Record that ``token`` received the credentials of ``version`` in the environment, in one
    statement; False when the environment no longer exists (nothing recorded)."""
    status = await conn.execute(INSERT_DELIVERY, environment_id, actor.name, actor.request_id, token, version)
    return status.endswith(" 1")


async def entries(
    conn: asyncpg.Connection,
    *,
    limit: int,
    before: int | None = None,
    resource_type: str | None = None,
    action: str | None = None,
) -> list[AuditEntry]:
    rows = await conn.fetch(SELECT_ENTRIES, before, resource_type, action, limit)
    return [
        AuditEntry(
            id=row["id"],
            at=row["at"],
            action=row["action"],
            resource_type=row["resource_type"],
            resource_id=row["resource_id"],
            actor=row["actor"],
            request_id=row["request_id"],
            details=orjson.loads(row["details"]),
        )
        for row in rows
    ]


async def delete_older_than(conn: asyncpg.Connection, retention: timedelta) -> int:
    result = await conn.execute(DELETE_OLDER, retention)
    return int(result.split()[-1])
