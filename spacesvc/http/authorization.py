"""Authorization: which role and scope each operation needs (role is checked before scope)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from spacesvc.http.errors import ApiError, ErrorCode
from spacesvc.http.request_context import PRINCIPAL
from spacesvc.tokens.model import CREDENTIALS_SCOPE, ROLES, Principal

ANY_ROLE = frozenset(ROLES)
ADMIN = frozenset({"admin"})
# BRIDGEPORT lets admins and operators use write methods (its connection test is a POST).
ADMIN_OR_OPERATOR = frozenset({"admin", "operator"})
READ = "settings:read"
WRITE = "settings:write"

ViewT = TypeVar("ViewT", bound=web.View)
Method = Callable[[ViewT], Awaitable[web.StreamResponse]]


def authorize(principal: Principal, roles: frozenset[str], scope: str) -> None:
    if principal.role not in roles:
        raise ApiError(
            ErrorCode.FORBIDDEN_ROLE,
            f"The token's role '{principal.role}' may not do this; it needs role {' or '.join(sorted(roles))}.",
            hint="Use a token with the required role.",
        )
    if scope not in principal.scopes:
        raise forbidden_scope(scope)


def authorize_for_environment(principal: Principal, environment_id: str, roles: frozenset[str], scope: str) -> None:
    """An environment's own routes: a token bound to this environment with spaces:credentials may
    use them; a token bound to another environment may not (FORBIDDEN_SCOPE); any other token needs
    ``roles`` and ``scope`` as ``authorize`` says."""
    bound = principal.environment_id
    if bound == environment_id and CREDENTIALS_SCOPE in principal.scopes:
        return
    if bound is not None and bound != environment_id:
        raise forbidden_scope(
            CREDENTIALS_SCOPE,
            "This token is bound to another environment.",
            hint="Use a token bound to this environment, or an unbound token with the role and scope needed.",
        )
    authorize(principal, roles, scope)


def forbidden_scope(scope: str, message: str | None = None, *, hint: str | None = None) -> ApiError:
    return ApiError(
        ErrorCode.FORBIDDEN_SCOPE,
        message or f"The token lacks the scope '{scope}'.",
        hint=hint or f"Create a token with --scope {scope}.",
    )


def requires(*, roles: frozenset[str], scope: str) -> Callable[[Method[ViewT]], Method[ViewT]]:
    """Decorate a view method: the authenticated token must have one of ``roles`` and ``scope``."""

    def decorate(method: Method[ViewT]) -> Method[ViewT]:
        @functools.wraps(method)
        async def wrapper(view: ViewT) -> web.StreamResponse:
            authorize(view.request[PRINCIPAL], roles, scope)
            return await method(view)

        return wrapper

    return decorate
