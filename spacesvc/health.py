"""``/healthz`` (the process serves) and ``/readyz`` (its dependencies answer)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp_apispec import docs
from marshmallow import Schema, fields

from backends import BackendUnavailable, Health, SecretBackend
from spacesvc import postgres
from spacesvc.errors import Unavailable
from spacesvc.http.errors import RETRY_AFTER_SECONDS, ApiError, ErrorCode
from spacesvc.http.jsonio import json_response
from spacesvc.http.openapi import errors, ok
from spacesvc.migrate import check_migrations, migrations_detail
from spacesvc.spaces import queries
from spacesvc.typedefs import LIFECYCLE, SECRET_BACKEND

READINESS_TIMEOUT = 3.0

log = logging.getLogger("spacesvc.readiness")


class HealthSchema(Schema):
    status = fields.String(required=True)


class ReadinessSchema(Schema):
    status = fields.String(required=True)
    checks = fields.Dict(keys=fields.String(), values=fields.Dict(), required=True)


@docs(
    tags=["health"],
    summary="Liveness: 200 while the process serves",
    operationId="healthz",
    responses={200: ok(HealthSchema, "Alive")},
)
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


def _check(ok: bool, detail: str) -> dict[str, Any]:
    return {"ok": ok, "detail": detail}


async def _run_checks(request: web.Request) -> dict[str, dict[str, Any]]:
    app = request.app
    backend = app[SECRET_BACKEND]
    checks: dict[str, dict[str, Any]] = {}
    try:
        async with postgres.acquire(app) as conn:
            await conn.fetchval("SELECT 1")
            checks["database"] = _check(True, "PostgreSQL answers")
            problem = await check_migrations(conn)
            checks["migrations"] = _check(problem is None, problem or await migrations_detail(conn))
            if problem is None:
                checks["secret_backend"] = await _backend_check(backend, conn)
            else:
                checks["secret_backend"] = _check(False, "not checked: the schema is not migrated")
    except Unavailable:
        checks["database"] = _check(False, "PostgreSQL is not reachable")
    for name in ("migrations", "secret_backend"):
        checks.setdefault(name, _check(False, "not checked: the database is not reachable"))
    return checks


async def _backend_check(backend: SecretBackend, conn: asyncpg.Connection) -> dict[str, Any]:
    try:
        health = await backend.health(conn)
    except BackendUnavailable as error:
        health = Health(False, str(error))
    config = await queries.get_config(conn)
    if health.ok and config is not None and config.secret_stored and config.secret_backend != backend.name:
        health = Health(
            False,
            f"the stored secretKey is in the {config.secret_backend} backend, not here: run "
            f"`spacesvc secrets migrate --to {backend.name}` with SPACESVC_SECRET_BACKEND={config.secret_backend}, "
            "then restart",
        )
    if not health.ok:
        log.warning("secret backend not ready: %s", health.detail, extra={"backend": backend.name})
    return _check(health.ok, f"{backend.name}: {health.detail}")


@docs(
    tags=["health"],
    summary="Readiness: PostgreSQL answers, migrations are applied, the secret backend is healthy",
    operationId="readyz",
    responses={200: ok(ReadinessSchema, "Ready"), **errors(503)},
)
async def readyz(request: web.Request) -> web.Response:
    if request.app[LIFECYCLE].draining:
        raise ApiError(
            ErrorCode.SERVICE_UNAVAILABLE,
            "Not ready: shutting down.",
            hint="This process is draining before it stops; send requests to another replica.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            extra={"checks": {"shutdown": _check(False, "draining: finishing its requests before it stops")}},
        )
    try:
        async with asyncio.timeout(READINESS_TIMEOUT):
            checks = await _run_checks(request)
    except TimeoutError:
        checks = {"database": _check(False, f"the checks did not finish within {READINESS_TIMEOUT:g}s")}
    failing = sorted(name for name, check in checks.items() if not check["ok"])
    if not failing:
        return json_response({"status": "ready", "checks": checks})
    raise ApiError(
        ErrorCode.SERVICE_UNAVAILABLE,
        f"Not ready: {', '.join(failing)} failing.",
        hint="Each entry of checks says what is wrong; the service recovers by itself when the dependency returns.",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        extra={"checks": checks},
    )
