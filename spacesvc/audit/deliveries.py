"""Credential deliveries recorded by group commit (``spacesvc.group_commit``).

Every delivery is in the audit trail before it is answered. Recording each in a statement and a
commit of its own made the audit the cost of a delivery under load; here each batch of deliveries
is one statement and one commit (a burst is written in statements of at most MAX_BATCH). Each
caller learns whether its entry was written (False: its environment no longer exists) or that the
batch failed, which it answers as it would its own failure: a delivery is never answered without
its entry committed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from spacesvc import postgres
from spacesvc.audit.model import Action, Actor, Resource
from spacesvc.audit.queries import INSERT_FROM
from spacesvc.group_commit import GroupCommit, unavailable_or

# One entry per delivery whose environment still exists, with the environment's name, in the
# order the deliveries arrived.
INSERT_DELIVERIES = f"""
{INSERT_FROM}
SELECT '{Action.DELIVERED.value}', '{Resource.CREDENTIALS.value}', e.id::text, d.actor, d.request_id,
       jsonb_build_object('environment', e.name, 'token', d.token, 'version', d.version)
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[])
     WITH ORDINALITY AS d(environment_id, actor, request_id, token, version, n)
JOIN environments e ON e.id = d.environment_id
ORDER BY d.n
RETURNING resource_id
"""
# The most deliveries one statement records: a burst (every held watch answered at once) is
# written in several statements, each well inside the statement timeout.
MAX_BATCH = 1000

Acquire = Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]


@dataclass(frozen=True, slots=True)
class Delivery:
    environment_id: str
    actor: Actor
    token: str
    version: int


class DeliveryLog:
    """Records deliveries in batches, one commit each; ``acquire`` lends a pool connection."""

    def __init__(self, acquire: Acquire) -> None:
        self._acquire = acquire
        self._batches: GroupCommit[Delivery, bool] = GroupCommit(
            self._write,
            name="audit-deliveries",
            max_batch=MAX_BATCH,
            failed=unavailable_or("the audit entry of this delivery could not be written"),
        )

    async def record(self, delivery: Delivery) -> bool:
        """Once the delivery's entry is committed: True; False when its environment is gone.
        A batch that could not be written raises here, in each of its deliveries: Unavailable
        when the database is, any other error as a failure of this request."""
        try:  # one id that is no UUID must not fail the batch it would ride in
            environment_id = str(uuid.UUID(delivery.environment_id))
        except ValueError:
            return False
        return await self._batches.submit(Delivery(environment_id, delivery.actor, delivery.token, delivery.version))

    async def close(self) -> None:
        """Let the batches under way finish (their callers are answered)."""
        await self._batches.close()

    async def _write(self, deliveries: list[Delivery]) -> list[bool]:
        async with self._acquire() as conn:
            rows = await conn.fetch(
                INSERT_DELIVERIES,
                [d.environment_id for d in deliveries],
                [d.actor.name for d in deliveries],
                [d.actor.request_id for d in deliveries],
                [d.token for d in deliveries],
                [d.version for d in deliveries],
            )
        written = {row["resource_id"] for row in rows}
        return [d.environment_id in written for d in deliveries]


DELIVERIES: web.AppKey[DeliveryLog] = web.AppKey("deliveries")


async def deliveries_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context (after the pool's): the app's delivery log, its last batches written before
    the pool closes."""
    deliveries = DeliveryLog(lambda: postgres.acquire(app))
    app[DELIVERIES] = deliveries
    try:
        yield
    finally:
        await deliveries.close()
