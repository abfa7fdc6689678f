"""The application factory: settings → resources (cleanup contexts) → routes → middlewares.

``create_app`` does no I/O; the pool and the secret backend open when the app starts and close
when it stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from backends import create_backend
from spacesvc import __version__, db, idempotency
from spacesvc.handlers.connection import SpacesBucketsView, SpacesTestView
from spacesvc.handlers.health import healthz, readyz
from spacesvc.handlers.spaces import SpacesSettingsView
from spacesvc.idempotency import idempotency_middleware
from spacesvc.middlewares import (
    auth_middleware,
    error_middleware,
    rate_limit_middleware,
    request_context_middleware,
)
from spacesvc.openapi import setup_openapi
from spacesvc.ratelimit import RateLimits
from spacesvc.settings import Settings
from spacesvc.storage import StorageClient
from spacesvc.typedefs import POOL, RATE_LIMITS, SECRET_BACKEND, SETTINGS, STORAGE

log = logging.getLogger("spacesvc")

# Shutdown never waits longer than this for connections still busy.
POOL_CLOSE_SECONDS = 10.0


async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    assert settings.database_url is not None
    log.info("connecting to PostgreSQL at %s", db.masked_dsn(settings.database_url))
    pool = await db.create_pool(settings)
    app[POOL] = pool
    try:
        yield
    finally:
        try:
            async with asyncio.timeout(POOL_CLOSE_SECONDS):
                await pool.close()
        except TimeoutError:
            log.warning("PostgreSQL connections did not close within %ss; terminating them", POOL_CLOSE_SECONDS)
            pool.terminate()


async def secret_backend_ctx(app: web.Application) -> AsyncIterator[None]:
    backend = create_backend(app[SETTINGS])
    app[SECRET_BACKEND] = backend
    log.info("secret backend: %s", backend.name)
    await backend.start()
    try:
        yield
    finally:
        await backend.close()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[
            request_context_middleware,
            error_middleware,
            auth_middleware,
            rate_limit_middleware,
            idempotency_middleware,
        ],
    )
    app[SETTINGS] = settings
    app[RATE_LIMITS] = RateLimits.from_budgets(settings.rate_limit, settings.auth_failure_limit)
    app.cleanup_ctx.extend([pool_ctx, secret_backend_ctx, idempotency.cleanup_ctx])
    app[STORAGE] = StorageClient()
    app.router.add_view(SpacesSettingsView.URL_PATH, SpacesSettingsView)
    app.router.add_view(SpacesTestView.URL_PATH, SpacesTestView)
    app.router.add_view(SpacesBucketsView.URL_PATH, SpacesBucketsView)
    app.router.add_get("/healthz", healthz, allow_head=True)
    app.router.add_get("/readyz", readyz, allow_head=True)
    setup_openapi(app, __version__)
    return app
