"""The application factory: settings → resources (cleanup contexts) → routes (``spacesvc.routes``)
→ the request pipeline (``spacesvc.http.pipeline``).

``create_app`` does no I/O; the pool and the secret backend open when the app starts and close
when it stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from spacesvc import __version__, postgres
from spacesvc.audit.deliveries import deliveries_ctx
from spacesvc.health import READINESS, READINESS_REPORTED
from spacesvc.http import idempotency, pipeline
from spacesvc.http.openapi import setup_openapi
from spacesvc.http.ratelimit import rate_limits_ctx
from spacesvc.keys.runtime import keys_ctx
from spacesvc.lifecycle import setup_lifecycle
from spacesvc.live import live_ctx
from spacesvc.metrics import RENDERED, metrics_ctx
from spacesvc.recent import Recent
from spacesvc.routes import add_routes, declared
from spacesvc.s3 import S3, S3Client
from spacesvc.secret_backend import secret_backend_ctx
from spacesvc.settings import SETTINGS, Settings
from spacesvc.spaces.writes import spaces_writes_ctx
from spacesvc.sweeper import sweeper_ctx


async def s3_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[S3].close()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        client_max_size=settings.max_body_bytes, middlewares=pipeline.middlewares(metrics=settings.metrics)
    )
    app[SETTINGS] = settings
    app[S3] = S3Client(settings.outbound_allow)
    setup_lifecycle(app)
    app[READINESS_REPORTED] = {}
    app[READINESS] = Recent()
    app[RENDERED] = Recent()
    app.cleanup_ctx.extend(
        [
            rate_limits_ctx,
            postgres.pool_ctx,
            deliveries_ctx,
            live_ctx,
            secret_backend_ctx,
            spaces_writes_ctx,
            idempotency.fingerprint_key_ctx,
            sweeper_ctx,
            metrics_ctx,
            s3_ctx,
            keys_ctx,
        ]
    )
    add_routes(app, metrics=settings.metrics)
    setup_openapi(app, __version__)
    answer_head_as_get(app)
    pipeline.declare_policies(app, declared(metrics=settings.metrics))
    return app


def answer_head_as_get(app: web.Application) -> None:
    """HEAD is answered wherever GET is: a route added with GET alone (the API docs') gets HEAD
    too, with the same handler; aiohttp sends its headers without the body. A view answers HEAD
    with its ``head = get``."""
    for resource in app.router.resources():
        methods = {route.method: route.handler for route in resource}
        if "GET" in methods and "HEAD" not in methods and isinstance(resource, web.Resource):
            resource.add_route("HEAD", methods["GET"])
