"""The audit trail's SQL: recording an entry (inside the caller's transaction), reading it newest
first with a cursor and filters, and sweeping entries past their retention."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import orjson

from spacesvc.audit.model import Actor, AuditEntry, LogEntry, LogFilters, Resource

# An entry's columns, for an INSERT with VALUES or with a SELECT (a write done in one statement)
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
# The trail as BRIDGEPORT's audit page reads it: with the token that acted (the live token of that
# name at that moment: a live token's name is unique) and the environment an entry is about.
# $1 environmentId, $2 resourceType, $3 resourceId, $4 action, $5 limit, $6 offset.
ENVIRONMENT_ENTRIES = f"resource_type IN ('{Resource.ENVIRONMENT.value}', '{Resource.CREDENTIALS.value}')"
LOG_FILTERS = f"""
WHERE ($1::text IS NULL OR ({ENVIRONMENT_ENTRIES} AND a.resource_id = $1))
  AND ($2::text IS NULL OR a.resource_type = $2)
  AND ($3::text IS NULL OR a.resource_id = $3)
  AND ($4::text IS NULL OR a.action = $4)
"""
SELECT_LOGS = f"""
SELECT a.id, a.at, a.action, a.resource_type, a.resource_id, a.actor, a.details::text AS details,
       coalesce(a.details->>'name', a.details->>'environment') AS resource_name,
       t.id::text AS token_id,
       CASE WHEN {ENVIRONMENT_ENTRIES} THEN a.resource_id END AS environment_id,
       CASE WHEN {ENVIRONMENT_ENTRIES}
            THEN coalesce(e.name, a.details->>'name', a.details->>'environment') END AS environment_name
FROM audit_log a
LEFT JOIN LATERAL (
    SELECT id FROM api_tokens
    WHERE name = a.actor AND created_at <= a.at AND (revoked_at IS NULL OR revoked_at >= a.at)
    ORDER BY created_at DESC LIMIT 1
) t ON true
LEFT JOIN environments e ON e.id::text = a.resource_id
{LOG_FILTERS}
ORDER BY a.id DESC
LIMIT $5 OFFSET $6
"""
COUNT_LOGS = f"SELECT count(*) FROM audit_log a {LOG_FILTERS}"
DELETE_OLDER = "DELETE FROM audit_log WHERE at < now() - $1::interval"


async def record(
    conn: asyncpg.Connection,
    action: str,
    resource_type: str,
    resource_id: str | None,
    actor: Actor,
    details: dict[str, Any] | None = None,
) -> None:
    """Add an entry; call it inside the transaction of the change it records."""
    await conn.execute(
        INSERT_ENTRY,
        str(action),
        str(resource_type),
        resource_id,
        actor.name,
        actor.request_id,
        orjson.dumps(details or {}).decode(),
    )


async def record_all(
    conn: asyncpg.Connection, resource_type: str, resource_id: str, entries: list[tuple[str, Actor, dict[str, Any]]]
) -> None:
    """Add entries (action, actor, details) about one resource, in order; inside the transaction
    of the changes they record."""
    await conn.executemany(
        INSERT_ENTRY,
        [
            (str(action), str(resource_type), resource_id, actor.name, actor.request_id, orjson.dumps(details).decode())
            for action, actor, details in entries
        ],
    )


async def entries(
    conn: asyncpg.Connection,
    *,
    limit: int,
    before: int | None = None,
    resource_type: str | None = None,
    action: str | None = None,
) -> list[AuditEntry]:
    rows = await conn.fetch(SELECT_ENTRIES, before, resource_type, action, limit)
    return [_entry(row, row["request_id"]) for row in rows]


def _entry(row: asyncpg.Record, request_id: str | None) -> AuditEntry:
    return AuditEntry(
        id=row["id"],
        at=row["at"],
        action=row["action"],
        resource_type=row["resource_type"],
        resource_id=row["resource_id"],
        actor=row["actor"],
        request_id=request_id,
        details=orjson.loads(row["details"]),
    )


async def logs(conn: asyncpg.Connection, filters: LogFilters, *, limit: int, offset: int) -> tuple[list[LogEntry], int]:
    """A page of the trail as BRIDGEPORT reads it, newest first, and how many entries match."""
    where = (filters.environment_id, filters.resource_type, filters.resource_id, filters.action)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(SELECT_LOGS, *where, limit, offset)
        total = await conn.fetchval(COUNT_LOGS, *where)
    page = [
        LogEntry(
            entry=_entry(row, request_id=None),  # BRIDGEPORT's logs show no request id
            resource_name=row["resource_name"],
            token_id=row["token_id"],
            environment_id=row["environment_id"],
            environment_name=row["environment_name"],
        )
        for row in rows
    ]
    return page, int(total)


async def delete_older_than(conn: asyncpg.Connection, retention: timedelta) -> int:
    result = await conn.execute(DELETE_OLDER, retention)
    return int(result.split()[-1])
