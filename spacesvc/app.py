"""The application factory: settings → resources (cleanup contexts) → routes → middlewares.

``create_app`` does no I/O; the pool and the secret backend open when the app starts and close
when it stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from spacesvc import __version__, postgres
from spacesvc.audit.deliveries import deliveries_ctx
from spacesvc.audit.views import AuditLogsView, AuditView
from spacesvc.environments.views import EnvironmentsView, EnvironmentView
from spacesvc.health import READINESS, READINESS_REPORTED, healthz, readyz
from spacesvc.http import idempotency
from spacesvc.http.authentication import authentication_middleware
from spacesvc.http.envelope import error_middleware
from spacesvc.http.openapi import setup_openapi
from spacesvc.http.ratelimit import rate_limit_middleware, rate_limits_ctx
from spacesvc.http.request_context import request_context_middleware
from spacesvc.lifecycle import setup_lifecycle
from spacesvc.live import live_ctx
from spacesvc.metrics import RENDERED, metrics_ctx, metrics_view
from spacesvc.recent import Recent
from spacesvc.s3 import S3, S3Client
from spacesvc.secret_backend import secret_backend_ctx
from spacesvc.settings import SETTINGS, Settings
from spacesvc.spaces.connection import SpacesBucketsView, SpacesTestView
from spacesvc.spaces.credentials import CredentialsView, EnvironmentBucketsView, OwnCredentialsView
from spacesvc.spaces.enablement import SpacesEnvironmentsView, SpacesEnvironmentView
from spacesvc.spaces.environment_test import EnvironmentTestView
from spacesvc.spaces.views import SpacesSettingsView
from spacesvc.sweeper import sweeper_ctx


async def s3_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[S3].close()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        # outermost first
        middlewares=[
            request_context_middleware(metrics=settings.metrics),
            error_middleware,
            authentication_middleware,
            rate_limit_middleware,
        ],
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
            idempotency.fingerprint_key_ctx,
            sweeper_ctx,
            metrics_ctx,
            s3_ctx,
        ]
    )
    for view in (
        SpacesSettingsView,
        SpacesTestView,
        SpacesBucketsView,
        SpacesEnvironmentsView,
        SpacesEnvironmentView,
        EnvironmentsView,
        EnvironmentView,
        EnvironmentBucketsView,
        EnvironmentTestView,
        CredentialsView,
        OwnCredentialsView,
        AuditView,
        AuditLogsView,
    ):
        app.router.add_view(view.URL_PATH, view)
    app.router.add_get("/healthz", healthz, allow_head=True)
    app.router.add_get("/readyz", readyz, allow_head=True)
    if settings.metrics:
        app.router.add_get("/metrics", metrics_view)
    setup_openapi(app, __version__)
    answer_head_as_get(app)
    return app


def answer_head_as_get(app: web.Application) -> None:
    """HEAD is answered wherever GET is: a route added with GET alone (the API docs') gets HEAD
    too, with the same handler; aiohttp sends its headers without the body. A view answers HEAD
    with its ``head = get``."""
    for resource in app.router.resources():
        methods = {route.method: route.handler for route in resource}
        if "GET" in methods and "HEAD" not in methods and isinstance(resource, web.Resource):
            resource.add_route("HEAD", methods["GET"])
