"""Deleting what has outlived its retention, every few minutes, for as long as the app runs:
Idempotency-Key records (24 h) and audit entries (SPACESVC_AUDIT_RETENTION)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from aiohttp import web

from spacesvc import postgres
from spacesvc.audit import queries as audit
from spacesvc.errors import Unavailable
from spacesvc.http.idempotency import delete_expired
from spacesvc.settings import SETTINGS

log = logging.getLogger("spacesvc.sweeper")

INTERVAL_SECONDS = 600.0


async def sweep_once(app: web.Application) -> None:
    retention = timedelta(seconds=app[SETTINGS].audit_retention_seconds)
    async with postgres.acquire(app) as conn:
        await delete_expired(conn)
        removed = await audit.delete_older_than(conn, retention)
    if removed:
        log.info("removed %d audit entries older than the retention", removed)


async def sweeper_ctx(app: web.Application) -> AsyncIterator[None]:
    async def sweep() -> None:
        while True:
            await asyncio.sleep(INTERVAL_SECONDS)
            try:
                await sweep_once(app)
            except Unavailable:
                log.warning("retention sweep skipped: the database is unavailable")

    task = asyncio.create_task(sweep(), name="retention-sweeper")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
