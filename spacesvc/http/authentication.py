"""Authentication: the bearer token of a request to a protected route becomes its ``Principal``.

Which routes need one, and the role and scope each operation needs, the request pipeline says
(``spacesvc.http.pipeline``, ``spacesvc.routes``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from spacesvc.audit.model import Actor
from spacesvc.http.errors import ApiError, ErrorCode
from spacesvc.http.ratelimit import RATE_LIMITS
from spacesvc.http.request_context import PRINCIPAL, REQUEST_ID
from spacesvc.live import LIVE, LookupRefused
from spacesvc.tokens.model import TOKEN_PATTERN, InvalidToken, Principal

# The live state's ``tokens_state`` when the request's token was last checked.
TOKENS_CHECKED: web.RequestKey[int] = web.RequestKey("tokens_checked")


def _unauthorized(message: str) -> ApiError:
    return ApiError(
        ErrorCode.UNAUTHORIZED,
        message,
        hint="Send Authorization: Bearer <token>; create one with `spacesvc tokens create`.",
    )


async def authenticate(request: web.Request) -> Principal:
    """The principal of a request to a protected route (``spacesvc.http.pipeline``).

    A failed attempt spends the client address's auth-failure budget; once that is spent, further
    failed attempts from the address get 429 instead of 401 (brute-force protection), while a
    valid token from the same address is still served: a shared proxy's address cannot be used
    to lock everyone behind it out. An address whose budget is spent is answered 429 before any
    database lookup: only a token known in memory is still served from it.

    That token, the common case, is served first, without asking the budget at all.
    """
    known = _known_in_memory(request)
    if known is not None:
        return known
    failures = request.app[RATE_LIMITS].auth_failures
    address = f"address:{request.remote or 'unknown'}"
    spent = await failures.spent(address) if failures is not None else None
    try:
        return await _authenticate(request, lookup_allowed=spent is None)
    except LookupRefused:
        assert failures is not None and spent is not None
        raise failures.exceeded(spent, "Too many failed authentication attempts from this address.") from None
    except ApiError as error:
        if error.code is ErrorCode.UNAUTHORIZED and failures is not None:
            decision = await failures.take(address)
            if decision is not None and not decision.allowed:
                raise failures.exceeded(
                    decision, "Too many failed authentication attempts from this address."
                ) from None
        raise


def _known_in_memory(request: web.Request) -> Principal | None:
    """The principal of a well-formed bearer token that memory knows to be valid, or None: the
    caller then takes the whole way (``_authenticate``), which says why it is refused."""
    header = request.headers.get("Authorization")
    token = None if header is None else _bearer_token(header)
    if token is None:
        return None
    live = request.app[LIVE]
    checked = live.tokens_state  # before the check, as in _authenticate
    principal = live.valid_in_memory(token)
    if principal is not None:
        request[TOKENS_CHECKED] = checked
    return principal


def _bearer_token(header: str) -> str | None:
    """The token of an Authorization header, or None if it is not a well-formed bearer token."""
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and TOKEN_PATTERN.match(token) else None


async def _authenticate(request: web.Request, *, lookup_allowed: bool = True) -> Principal:
    header = request.headers.get("Authorization")
    if header is None:
        raise _unauthorized("Authentication required: no bearer token was sent.")
    token = _bearer_token(header)
    if token is None:
        raise _unauthorized("The Authorization header is not a well-formed spacesvc bearer token.")
    live = request.app[LIVE]
    checked = live.tokens_state  # before the check: a change during it is seen as one after it
    try:
        principal = await live.principal(request.app, token, lookup_allowed=lookup_allowed)
    except InvalidToken:
        raise _unauthorized("The bearer token is unknown, expired or revoked.") from None
    request[TOKENS_CHECKED] = checked
    return principal


async def authenticate_again(request: web.Request) -> None:
    """A held request (a watch) checks its token again when it wakes: 401 once it is revoked or
    expired. While the tokens in memory are the same as when it was last checked (and fresh), only
    its expiry can have changed the answer: thousands of watches woken at once by a change of what
    they watch need not hash and look up their tokens again."""
    principal = request[PRINCIPAL]
    checked = request.get(TOKENS_CHECKED)
    if (
        checked is not None
        and request.app[LIVE].tokens_unchanged(checked)
        and (principal.expires_at is None or datetime.now(UTC) < principal.expires_at)
    ):
        return
    request[PRINCIPAL] = await _authenticate(request)


def request_actor(request: web.Request) -> Actor:
    """Who makes the changes of an authenticated request, for the audit trail."""
    return Actor(request[PRINCIPAL].name, request[REQUEST_ID])
