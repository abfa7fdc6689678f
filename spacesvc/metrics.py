"""``GET /metrics`` (docs/configuration.md): the instruments of ``spacesvc.instruments`` in the
Prometheus text format, and the gauges of this process's own state, read from the app.

With ``spacesvc serve --workers N`` each worker writes its figures to the directory named by
``PROMETHEUS_MULTIPROC_DIR`` (set by the supervisor before the workers start) and ``/metrics``,
answered by whichever worker, adds up every worker's (prometheus-client's multiprocess mode).
Gauges of a process's own state (pool, listener, Vault token) are refreshed every
``REFRESH_SECONDS`` by each process and shown per ``pid`` in that mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp_apispec import docs
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client import REGISTRY as PROCESS_REGISTRY

from spacesvc.instruments import LISTENING, POOL_IDLE, POOL_SIZE, VAULT_TOKEN_TTL
from spacesvc.live import LIVE
from spacesvc.postgres import POOL
from spacesvc.recent import Recent
from spacesvc.secret_backend import SECRET_BACKEND

REFRESH_SECONDS = 2.0
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


@docs(
    tags=["health"],
    summary="Prometheus metrics (text format); SPACESVC_METRICS=off removes the route",
    description="Rendered at most once a second, however often it is asked.",
    operationId="metrics",
    responses={200: {"description": "The metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics_view(request: web.Request) -> web.Response:
    """GET /metrics: the Prometheus text format, every worker's figures added up."""
    app = request.app

    async def render() -> bytes:
        refresh(app)  # this process's own gauges as of now (the others' as of their last refresh)
        if MULTIPROCESS:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(PROCESS_REGISTRY)

    body = await app[RENDERED].get(render)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# The text last rendered, reused for a second however often /metrics is asked.
RENDERED: web.AppKey[Recent[bytes]] = web.AppKey("metrics_rendered", Recent)


def refresh(app: web.Application) -> None:
    """Set the gauges of this process's own state."""
    pool = app.get(POOL)
    if pool is not None:
        POOL_SIZE.set(pool.get_size())
        POOL_IDLE.set(pool.get_idle_size())
    live = app.get(LIVE)
    if live is not None:
        LISTENING.set(1 if live.listening else 0)
    backend = app.get(SECRET_BACKEND)
    ttl = backend.token_seconds_left() if backend is not None else None
    if ttl is not None:
        VAULT_TOKEN_TTL.set(ttl)


async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """Refresh the process's gauges while the app runs."""

    async def keep_fresh() -> None:
        while True:
            refresh(app)
            await asyncio.sleep(REFRESH_SECONDS)

    task = asyncio.create_task(keep_fresh(), name="metrics-refresh")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
