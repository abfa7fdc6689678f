"""``/healthz`` (the process serves) and ``/readyz`` (its dependencies answer).

``/readyz`` is computed at most once a second, however often it is asked and whatever else
happens meanwhile (a stream of writes does not make it computed more often). Without an admin
token it names each failing check in words an operator acts on, leaving out what a secret
backend's detail may hold (key ids, mount paths, policy text); an admin token gets the detail,
which the log has too.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp_apispec import docs
from marshmallow import Schema, fields

from backends import BackendUnavailable, Health
from spacesvc import postgres
from spacesvc.errors import DomainError, Unavailable
from spacesvc.http.errors import RETRY_AFTER_SECONDS, ApiError, ErrorCode
from spacesvc.http.jsonio import json_response
from spacesvc.http.openapi import errors, ok
from spacesvc.http.ratelimit import RATE_LIMITS
from spacesvc.lifecycle import LIFECYCLE
from spacesvc.live import LIVE, LookupRefused
from spacesvc.migrate import migration_state
from spacesvc.recent import Recent
from spacesvc.secret_backend import SECRET_BACKEND
from spacesvc.spaces import queries, service
from spacesvc.tokens.model import TOKEN_PATTERN, InvalidToken

# The whole answer within READINESS_TIMEOUT; each check, run side by side, within CHECK_BUDGET,
# so that a hung dependency is reported as itself (a secret backend bounds its own calls below it).
READINESS_TIMEOUT = 3.0
CHECK_BUDGET = 2.5

log = logging.getLogger("spacesvc.readiness")

# The failing detail last logged per check (None: passing), to log changes only.
READINESS_REPORTED: web.AppKey[dict[str, str | None]] = web.AppKey("readiness_reported")
Checks = dict[str, dict[str, Any]]
# The last checks, reused for a second (see the module's docstring).
READINESS: web.AppKey[Recent[Checks]] = web.AppKey("readiness", Recent)


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


async def _run_checks(app: web.Application) -> dict[str, dict[str, Any]]:
    database, backend = await asyncio.gather(_database_checks(app), _secret_backend_check(app))
    checks = {**database, "secret_backend": backend}
    _log_changes(app, checks)
    return checks


async def _database_checks(app: web.Application) -> dict[str, dict[str, Any]]:
    try:
        async with asyncio.timeout(CHECK_BUDGET):
            async with postgres.acquire(app) as conn:
                await conn.fetchval("SELECT 1")
                migrated, detail = await migration_state(conn)
    except (Unavailable, TimeoutError) as error:
        why = "is not reachable" if isinstance(error, Unavailable) else f"did not answer within {CHECK_BUDGET:g}s"
        return {
            "database": _check(False, f"PostgreSQL {why}"),
            "migrations": _check(False, "not checked: the database is not reachable"),
        }
    return {
        "database": _check(True, "PostgreSQL answers"),
        "migrations": _check(migrated, detail),
    }


async def _secret_backend_check(app: web.Application) -> dict[str, Any]:
    backend = app[SECRET_BACKEND]
    waiting_for = "the database"
    try:
        async with asyncio.timeout(CHECK_BUDGET):
            async with postgres.acquire(app) as conn:
                if not (await migration_state(conn))[0]:
                    return _check(False, "not checked: the schema is not migrated")
                waiting_for = f"the {backend.name} backend"
                try:
                    health = await backend.health(conn)
                except BackendUnavailable as error:
                    health = Health(False, str(error))
                waiting_for = "the database"
                config = await queries.get_config(conn)
    except Unavailable:
        return _check(False, "not checked: the database is not reachable")
    except TimeoutError:
        return _check(False, f"{backend.name}: not checked within {CHECK_BUDGET:g}s (waiting for {waiting_for})")
    elsewhere = service.held_elsewhere(config, backend) if health.ok and config is not None else None
    if elsewhere is not None:
        health = Health(False, f"{elsewhere.message} {elsewhere.hint}")
    return _check(health.ok, f"{backend.name}: {health.detail}")


async def _bounded_checks(app: web.Application) -> Checks:
    try:
        async with asyncio.timeout(READINESS_TIMEOUT):
            return await _run_checks(app)
    except TimeoutError:  # each check keeps its own budget; this is the last resort
        return {"readiness": _check(False, f"the checks did not finish within {READINESS_TIMEOUT:g}s")}


def _for_anyone(checks: Checks, backend: str) -> Checks:
    """The checks without the secret backend's own words (key ids, mount paths, policy text)."""
    check = checks.get("secret_backend")
    if check is None:
        return checks
    if check["ok"]:
        detail = f"{backend}: healthy"
    else:
        detail = (
            f"{backend}: the secret backend is not usable; the service's log says why "
            "(so does /readyz with an admin token)"
        )
    return {**checks, "secret_backend": _check(check["ok"], detail)}


async def _from_an_admin(request: web.Request) -> bool:
    """Whether the request carries a valid admin token. A wrong token spends the address's
    failed-authentication budget, as on the API: the detail is no guessing oracle."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    app = request.app
    failures = app[RATE_LIMITS].auth_failures
    address = f"address:{request.remote or 'unknown'}"
    spent = await failures.spent(address) if failures is not None else None
    try:
        if not TOKEN_PATTERN.match(token.strip()):
            raise InvalidToken()
        async with asyncio.timeout(CHECK_BUDGET):
            principal = await app[LIVE].principal(app, token.strip(), lookup_allowed=spent is None)
    except InvalidToken:
        if failures is not None:
            await failures.take(address)
        return False
    except (LookupRefused, DomainError, TimeoutError):
        return False
    return principal.role == "admin"


def _log_changes(app: web.Application, checks: dict[str, dict[str, Any]]) -> None:
    """One line when a check starts failing or changes its reason, one when it passes again:
    probes every few seconds must not repeat the same line."""
    reported = app[READINESS_REPORTED]
    for name, check in checks.items():
        detail = None if check["ok"] else check["detail"]
        if detail == reported.get(name):
            continue
        if detail is not None:
            log.warning("%s not ready: %s", name.replace("_", " "), detail, extra={"check": name})
        elif reported.get(name) is not None:
            log.info("%s ready again", name.replace("_", " "), extra={"check": name})
        reported[name] = detail


@docs(
    tags=["health"],
    summary="Readiness: PostgreSQL answers, migrations are applied, the secret backend is healthy",
    operationId="readyz",
    description="Computed at most once a second. Without an admin token (Authorization: Bearer) a failing "
    "secret backend is named without its detail; an admin token gets the detail.",
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
    app = request.app
    checks = await app[READINESS].get(lambda: _bounded_checks(app))
    if not await _from_an_admin(request):
        checks = _for_anyone(checks, app[SECRET_BACKEND].name)
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
