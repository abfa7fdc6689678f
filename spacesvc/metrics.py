"""Prometheus metrics (SPEC §10): what the service counts, and ``GET /metrics``.

Every label value is bounded: a method among the HTTP methods, a route template (never a raw
path), a status code, a backend or an outcome from a fixed set. No token, secret, id or address.

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
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client import REGISTRY as PROCESS_REGISTRY

from spacesvc.recent import Recent
from spacesvc.typedefs import LIVE, POOL, SECRET_BACKEND

REFRESH_SECONDS = 2.0
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

REQUESTS = Counter("spacesvc_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
DURATION = Histogram(
    "spacesvc_http_request_duration_seconds",
    "Time from the request's arrival in the app to its answer",
    ["method", "route", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
CACHE_READS = Counter(
    "spacesvc_cache_reads_total", "Reads of the configuration and tokens, by where they were served from", ["source"]
)
LISTENING = Gauge(
    "spacesvc_cache_listening", "1 while the process's LISTEN connection is up", multiprocess_mode="liveall"
)
NOTIFICATIONS = Counter("spacesvc_cache_notifications_total", "Change notifications received")
POOL_SIZE = Gauge("spacesvc_db_pool_connections", "PostgreSQL connections open", multiprocess_mode="livesum")
POOL_IDLE = Gauge("spacesvc_db_pool_idle_connections", "PostgreSQL connections idle", multiprocess_mode="livesum")
BACKEND_CALLS = Counter(
    "spacesvc_secret_backend_calls_total",
    "Calls to the secret backend",
    ["backend", "operation", "outcome"],
)
VAULT_TOKEN_TTL = Gauge(
    "spacesvc_vault_token_ttl_seconds",
    "Seconds left on the Vault token (absent for other backends)",
    multiprocess_mode="liveall",
)
RATE_LIMITED = Counter("spacesvc_rate_limited_total", "Requests refused by a rate budget", ["policy"])
RATE_LIMIT_STORAGE_ERRORS = Counter(
    "spacesvc_rate_limit_storage_errors_total", "Requests served without limiting: the shared storage failed"
)
RATE_LIMIT_STORAGE_UP = Gauge(
    "spacesvc_rate_limit_storage_up",
    "1 while the rate-limit storage answers (always 1 for memory)",
    multiprocess_mode="liveall",
)
IDEMPOTENT_REPLAYS = Counter("spacesvc_idempotent_replays_total", "Writes answered from a stored Idempotency-Key")
WATCHES = Gauge("spacesvc_watches_held", "Requests held by Prefer: wait now", multiprocess_mode="livesum")
WATCHES_ENDED = Counter("spacesvc_watches_answered_total", "Held requests answered, by outcome", ["outcome"])
CREDENTIAL_DELIVERIES = Counter("spacesvc_credential_deliveries_total", "Secrets delivered to workloads")


class RequestMetrics:
    """Counts and times answered requests; label children are looked up once per combination."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, request: web.BaseRequest, status: int, seconds: float) -> None:
        method = request.method if request.method in METHODS else "OTHER"
        route = route_template(request)
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (REQUESTS.labels(method, route, str(status)), DURATION.labels(method, route, str(status)))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


def route_template(request: web.BaseRequest) -> str:
    """The matched route's template (``/api/environments/{id}``), or ``unmatched``: never the raw path."""
    match_info = getattr(request, "_match_info", None)
    if match_info is None or match_info.http_exception is not None:
        return "unmatched"
    resource = match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


request_metrics = RequestMetrics()


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
