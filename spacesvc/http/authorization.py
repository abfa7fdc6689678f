"""Authorization: the checks a route's policy names (``spacesvc.http.pipeline``); role is checked
before scope."""

from __future__ import annotations

from spacesvc.http.errors import ApiError, ErrorCode
from spacesvc.tokens.model import CREDENTIALS_SCOPE, ROLES, Principal

ANY_ROLE = frozenset(ROLES)
ADMIN = frozenset({"admin"})
# BRIDGEPORT lets admins and operators use write methods (its connection test is a POST).
ADMIN_OR_OPERATOR = frozenset({"admin", "operator"})
READ = "settings:read"
WRITE = "settings:write"


def describe_roles(roles: frozenset[str]) -> str:
    """As docs/api.md's route table says who may call: "any role", "admin", "admin or operator"."""
    if roles == ANY_ROLE:
        return "any role"
    return " or ".join(sorted(roles))


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


def authorize_bound(principal: Principal, environment_id: str) -> None:
    """An environment's credentials: only a token with spaces:credentials bound to it."""
    if CREDENTIALS_SCOPE not in principal.scopes or principal.environment_id != environment_id:
        raise forbidden_scope(
            CREDENTIALS_SCOPE,
            "Only a token with the scope spaces:credentials, bound to this environment, reads its credentials.",
            hint="spacesvc tokens create --scope spaces:credentials --environment NAME_OR_ID …",
        )


def authorize_own_environment(principal: Principal) -> None:
    """The credentials of the token's own environment: a token with spaces:credentials bound to one."""
    if principal.environment_id is None:
        raise forbidden_scope(
            CREDENTIALS_SCOPE,
            "Only a token with the scope spaces:credentials, bound to an environment, reads credentials.",
            hint="spacesvc tokens create --scope spaces:credentials --environment NAME_OR_ID …",
        )
    authorize_bound(principal, principal.environment_id)
