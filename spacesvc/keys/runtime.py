"""The keys' background work in a running service (docs/keys.md): every few seconds, retire
rotated-out keys that are due, delete keys sent to deletion (retried until done), rotate keys
past SPACESVC_KEY_MAX_AGE; every 10 minutes, reconcile with the issuer. One process of a fleet
at a time does it, the one holding a PostgreSQL advisory lock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

from spacesvc import postgres
from spacesvc.errors import DomainError, Unavailable
from spacesvc.keys import store
from spacesvc.keys.service import Keys
from spacesvc.s3 import S3
from spacesvc.secret_backend import SECRET_BACKEND
from spacesvc.settings import SETTINGS

log = logging.getLogger("spacesvc.keys")

TICK_SECONDS = 2.0
RECONCILE_SECONDS = 600.0


@dataclass
class KeysRuntime:
    keys: Keys
    _woken: asyncio.Event = field(default_factory=asyncio.Event)

    def wake(self) -> None:
        """Run a pass (with a reconciliation) now: an issuer was set."""
        self._woken.set()

    async def run(self, app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        next_reconcile = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_SECONDS):
                    await self._woken.wait()
            reconcile = self._woken.is_set() or loop.time() >= next_reconcile
            self._woken.clear()
            try:
                if await self.one_pass(app, reconcile=reconcile) and reconcile:
                    next_reconcile = loop.time() + RECONCILE_SECONDS
            except (Unavailable, DomainError) as error:
                log.warning("keys: background pass incomplete, retried: %s", error)
            except Exception:
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise
                log.exception("keys: background pass failed, retried")

    async def one_pass(self, app: web.Application, *, reconcile: bool) -> bool:
        """One pass while holding the lock (a transaction's, so a connection that goes away lets
        go of it); False when another process holds it."""
        async with postgres.acquire(app) as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", store.BACKGROUND_LOCK_ID):
                return False
            await self.keys.background_pass(reconcile=reconcile)
        return True


KEYS: web.AppKey[KeysRuntime] = web.AppKey("keys")


async def keys_ctx(app: web.Application) -> AsyncIterator[None]:
    runtime = KeysRuntime(Keys(lambda: postgres.acquire(app), app[SECRET_BACKEND], app[SETTINGS], app[S3].outbound))
    app[KEYS] = runtime
    task = asyncio.create_task(runtime.run(app), name="keys")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
