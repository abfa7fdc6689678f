"""The middlewares, outermost first: request id + access log, the error envelope, authentication,
rate limits, idempotency."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from ulid import ULID

from backends import BackendUnavailable
from spacesvc import db
from spacesvc.errors import ApiError, DependencyUnavailable, ErrorCode, internal_error, not_found, validation_error
from spacesvc.jsonio import json_response
from spacesvc.tokens import TOKEN_PATTERN, InvalidToken, Principal, authenticate
from spacesvc.typedefs import PRINCIPAL, RATE_LIMITS, REQUEST_ID

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

access_log = logging.getLogger("spacesvc.access")
error_log = logging.getLogger("spacesvc.error")

# Routes under this prefix need a bearer token; health probes and the docs do not.
PROTECTED_PREFIX = "/api/settings"


def new_request_id() -> str:
    return f"req_{ULID()}"


@web.middleware
async def request_context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every request an id, echo it in X-Request-ID, and log one line when it ends."""
    request_id = new_request_id()
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers["X-Request-ID"] = request_id
        return response
    finally:
        principal = request.get(PRINCIPAL)
        access_log.info(
            "%s %s %d",
            request.method,
            request.path,
            status,
            extra={
                "requestId": request_id,
                "method": request.method,
                "path": request.path,
                "status": status,
                "durationMs": round((time.perf_counter() - started) * 1000, 2),
                "token": principal.name if principal else None,
                "remote": request.remote,
            },
        )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into the one JSON envelope."""
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(request, error)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return error_response(request, from_http_exception(error))
    except BackendUnavailable as error:
        logging.getLogger("spacesvc.backend").warning(
            "secret backend unavailable: %s", error, extra={"requestId": request[REQUEST_ID]}
        )
        return error_response(request, DependencyUnavailable("secret_backend", str(error), hint=error.hint))
    except Exception:
        error_log.exception("unhandled error", extra={"requestId": request[REQUEST_ID]})
        return error_response(request, internal_error())


def error_response(request: web.Request, error: ApiError) -> web.Response:
    headers = dict(error.headers)
    if error.code is ErrorCode.UNAUTHORIZED:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="spacesvc"')
    return json_response(error.body(request[REQUEST_ID]), status=error.status, headers=headers)


def from_http_exception(error: web.HTTPException) -> ApiError:
    """aiohttp's own 404, 405, 413 … in the envelope."""
    if error.status == 404:
        return not_found("No such route.", hint="The API lives under /api/settings/spaces; see /api/docs.")
    if error.status == 405:
        allowed = error.headers.get("Allow", "")
        return validation_error(
            f"This route does not accept that method; allowed: {allowed}.",
            status=405,
            headers={"Allow": allowed},
        )
    if error.status == 413:
        return validation_error(
            "The request body is too large (at most 64 KiB).", status=413, hint="Send at most 65536 bytes."
        )
    if error.status == 415:
        return validation_error("The request body must be JSON (Content-Type: application/json).", status=415)
    if error.status >= 500:
        return internal_error()
    return validation_error(error.reason or "Bad request.", status=error.status)


def _unauthorized(message: str) -> ApiError:
    return ApiError(
        ErrorCode.UNAUTHORIZED,
        message,
        hint="Send Authorization: Bearer <token>; create one with `spacesvc tokens create`.",
    )


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate requests to protected routes; role and scope are checked by each handler.

    Failed attempts spend the client address's auth-failure budget; once it is spent, the
    address gets 429 before any token is looked at (brute-force protection).
    """
    if not request.path.startswith(PROTECTED_PREFIX) or request.match_info.http_exception is not None:
        return await handler(request)
    failures = request.app[RATE_LIMITS].auth_failures
    address = request.remote or "unknown"
    if failures is not None:
        decision = failures.peek(address)
        if not decision.allowed:
            raise failures.exceeded(decision, "Too many failed authentication attempts from this address.")
    try:
        request[PRINCIPAL] = await _authenticate(request)
    except ApiError as error:
        if error.code is ErrorCode.UNAUTHORIZED and failures is not None:
            failures.take(address)
        raise
    return await handler(request)


async def _authenticate(request: web.Request) -> Principal:
    header = request.headers.get("Authorization")
    if header is None:
        raise _unauthorized("Authentication required: no bearer token was sent.")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not TOKEN_PATTERN.match(token):
        raise _unauthorized("The Authorization header is not a well-formed spacesvc bearer token.")
    async with db.acquire(request.app) as conn:
        try:
            return await authenticate(conn, token)
        except InvalidToken:
            raise _unauthorized("The bearer token is unknown, expired or revoked.") from None


def _rate_limit_exempt(path: str) -> bool:
    return path in ("/healthz", "/readyz") or path == "/api/docs" or path.startswith("/api/docs/")


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Spend one request of the token's budget (or, without a token, the client address's)."""
    bucket = request.app[RATE_LIMITS].requests
    if bucket is None or _rate_limit_exempt(request.path):
        return await handler(request)
    principal = request.get(PRINCIPAL)
    key = f"token:{principal.token_id}" if principal else f"address:{request.remote}"
    decision = bucket.take(key)
    if not decision.allowed:
        whose = "this token" if principal else "this client address"
        raise bucket.exceeded(decision, f"Rate limit exceeded for {whose}.")
    response = await handler(request)
    response.headers.update(bucket.headers(decision))
    return response
