"""Credential deliveries recorded by group commit.

Every delivery is in the audit trail before it is answered. Recording each in a statement and a
commit of its own made the audit the cost of a delivery under load; here the deliveries that
arrive while one batch is being written wait for the next, and each batch is one statement and
one commit. A lone delivery is written at once (no timer, no added wait); under load a batch holds
every delivery that arrived during the previous one's round trip (at most MAX_BATCH). Each waiter
learns whether its entry was written (False: its environment no longer exists) or that the batch
failed, which it answers as it would its own failure: a delivery is never answered without its
entry committed.

The batch writer borrows a pool connection of its own: a request waiting for its entry holds none
(holding one would let waiting requests take the whole pool from the writer they wait for).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from spacesvc import postgres
from spacesvc.audit.model import Action, Actor, Resource
from spacesvc.audit.queries import INSERT_FROM
from spacesvc.errors import Unavailable

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


@dataclass(frozen=True, slots=True)
class _Failed:
    """The batch a delivery rode in was not written."""

    error: BaseException


class DeliveryLog:
    """Records deliveries in batches, one commit each; ``acquire`` lends a pool connection."""

    def __init__(self, acquire: Acquire) -> None:
        self._acquire = acquire
        self._waiting: list[tuple[Delivery, asyncio.Future[bool | _Failed]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, delivery: Delivery) -> bool:
        """Once the delivery's entry is committed: True; False when its environment is gone.
        A batch that could not be written raises here, in each of its deliveries: Unavailable
        when the database is, any other error as a failure of this request."""
        try:  # one id that is no UUID must not fail the batch it would ride in
            environment_id = str(uuid.UUID(delivery.environment_id))
        except ValueError:
            return False
        written: asyncio.Future[bool | _Failed] = asyncio.get_running_loop().create_future()
        self._waiting.append((Delivery(environment_id, delivery.actor, delivery.token, delivery.version), written))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_batches(), name="audit-deliveries")
        # A request cancelled meanwhile (its client left) does not cancel the batch it rides in.
        outcome = await asyncio.shield(written)
        if isinstance(outcome, _Failed):
            # an error of this request's own: one instance raised by every waiter of the batch
            # would collect all their tracebacks
            error = outcome.error
            if isinstance(error, Unavailable):
                raise Unavailable(error.dependency, str(error), hint=error.hint) from error
            raise RuntimeError("the audit entry of this delivery could not be written") from error
        return outcome

    async def close(self) -> None:
        """Let the batches under way finish (their waiters are answered)."""
        if self._writer is not None:
            await asyncio.shield(self._writer)

    async def _write_batches(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                try:
                    written = await self._write([delivery for delivery, _ in batch])
                except asyncio.CancelledError:
                    for _, waiter in [*batch, *self._waiting]:
                        waiter.cancel()
                    self._waiting = []
                    raise
                except Exception as error:  # handed to each waiter, which raises it as its own
                    for _, waiter in batch:
                        waiter.set_result(_Failed(error))
                    continue
                for delivery, waiter in batch:
                    waiter.set_result(delivery.environment_id in written)
        finally:
            self._writer = None

    async def _write(self, deliveries: list[Delivery]) -> set[str]:
        async with self._acquire() as conn:
            rows = await conn.fetch(
                INSERT_DELIVERIES,
                [d.environment_id for d in deliveries],
                [d.actor.name for d in deliveries],
                [d.actor.request_id for d in deliveries],
                [d.token for d in deliveries],
                [d.version for d in deliveries],
            )
        return {row["resource_id"] for row in rows}


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
