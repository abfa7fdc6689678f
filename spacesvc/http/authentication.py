"""Authentication: the bearer token of a request to a protected route becomes its ``Principal``.

Which role and scope an operation needs is checked by the handler (``authorization``).
"""

from __future__ import annotations

from aiohttp import web

from spacesvc.audit.model import Actor
from spacesvc.http.errors import ApiError, ErrorCode
from spacesvc.http.ratelimit import RATE_LIMITS
from spacesvc.http.request_context import PRINCIPAL, REQUEST_ID
from spacesvc.http.types import Handler
from spacesvc.live import LIVE
from spacesvc.tokens.model import TOKEN_PATTERN, InvalidToken, Principal

# Routes under /api need a bearer token; the docs (and the health probes, outside /api) do not.
PROTECTED_PREFIX = "/api/"
PUBLIC_PREFIX = "/api/docs"


def _unauthorized(message: str) -> ApiError:
    return ApiError(
        ErrorCode.UNAUTHORIZED,
        message,
        hint="Send Authorization: Bearer <token>; create one with `spacesvc tokens create`.",
    )


@web.middleware
async def authentication_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate requests to protected routes.

    A failed attempt spends the client address's auth-failure budget; once that is spent, further
    failed attempts from the address get 429 instead of 401 (brute-force protection), while a
    valid token from the same address is still served: a shared proxy's address cannot be used
    to lock everyone behind it out.
    """
    path = request.path
    if (
        not path.startswith(PROTECTED_PREFIX)
        or path.startswith(PUBLIC_PREFIX)
        or request.match_info.http_exception is not None
    ):
        return await handler(request)
    try:
        request[PRINCIPAL] = await _authenticate(request)
    except ApiError as error:
        failures = request.app[RATE_LIMITS].auth_failures
        if error.code is ErrorCode.UNAUTHORIZED and failures is not None:
            decision = await failures.take(f"address:{request.remote or 'unknown'}")
            if decision is not None and not decision.allowed:
                raise failures.exceeded(
                    decision, "Too many failed authentication attempts from this address."
                ) from None
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
    try:
        return await request.app[LIVE].principal(request.app, token)
    except InvalidToken:
        raise _unauthorized("The bearer token is unknown, expired or revoked.") from None


def request_actor(request: web.Request) -> Actor:
    """Who makes the changes of an authenticated request, for the audit trail."""
    return Actor(request[PRINCIPAL].name, request[REQUEST_ID])
