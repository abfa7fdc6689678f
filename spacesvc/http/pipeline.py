"""The request pipeline, declared once: the order of its layers, and what each route allows.

Outermost first (``middlewares``):

1. **edge** (``spacesvc.http.request_context``): the request id (``X-Request-ID``), one access-log
   line and the request metrics; every failure below it becomes the one JSON error envelope
   (``spacesvc.http.envelope``), which carries that id; while the process drains, every answer
   closes its connection (``spacesvc.lifecycle``).
2. **policy** (``policy_middleware``): the matched route's ``Policy``, in this order:
   authentication (a failure spends the client address's auth-failure budget; once it is spent,
   only a token known in memory is served from the address), the request budget (per token,
   or per address without one) unless the route is exempt, authorization (roles, scope,
   environment binding), the write's preconditions (If-Match, If-None-Match: *) where it takes
   them, and, on a route that takes an ``Idempotency-Key``, one run per key.
   Then the handler.

Each route's policy is declared in the route table (``spacesvc.routes``); a route without one is
refused when the app is built. A path no route matches (404, 405) is answered by the edge, after
the request budget of the client address.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware
from aiohttp.web_urldispatcher import AbstractResource

from spacesvc.http.authentication import authenticate
from spacesvc.http.authorization import (
    authorize,
    authorize_bound,
    authorize_for_environment,
    authorize_own_environment,
    describe_roles,
)
from spacesvc.http.conditional import PRECONDITIONS, preconditions
from spacesvc.http.envelope import answer_failure
from spacesvc.http.idempotency import run_idempotently
from spacesvc.http.ratelimit import RATE_LIMITS
from spacesvc.http.request_context import PRINCIPAL, matched_resource, request_context_middleware
from spacesvc.http.types import Handler
from spacesvc.lifecycle import close_connection_while_draining
from spacesvc.tokens.model import CREDENTIALS_SCOPE, Principal


class RateClass(StrEnum):
    """Which budget a route spends: the request budget, or none (probes, metrics, the docs)."""

    REQUESTS = "requests"
    EXEMPT = "exempt"


@dataclass(frozen=True)
class Access:
    """Who may call a route. The base class: anyone, without a token."""

    public = True

    def check(self, request: web.Request, principal: Principal) -> None:
        """Raise the 403 for a principal that may not make this request."""

    @property
    def who(self) -> str:
        """How docs/api.md's route table begins its "who" cell."""
        return "anyone"

    @property
    def forbids(self) -> bool:
        """Whether a caller can be refused (403)."""
        return False


@dataclass(frozen=True)
class Roles(Access):
    """A token with one of ``roles`` and ``scope``; ``with_body``: what a request with a body needs."""

    roles: frozenset[str]
    scope: str
    with_body: Roles | None = None
    public = False

    def check(self, request: web.Request, principal: Principal) -> None:
        if self.with_body is not None and request.body_exists:
            self.with_body.check(request, principal)
        elif self.roles:
            authorize(principal, self.roles, self.scope)

    @property
    def who(self) -> str:
        return f"{describe_roles(self.roles)}, `{self.scope}`"

    @property
    def forbids(self) -> bool:
        return True


@dataclass(frozen=True)
class RolesOrBound(Roles):
    """An environment's route (``{id}``): as ``Roles``, or a token bound to this environment with
    spaces:credentials; a token bound to another environment is refused."""

    def check(self, request: web.Request, principal: Principal) -> None:
        authorize_for_environment(principal, request.match_info["id"], self.roles, self.scope)

    @property
    def who(self) -> str:
        return f"{super().who}; or a token bound to this environment with `{CREDENTIALS_SCOPE}`"


@dataclass(frozen=True)
class Bound(Access):
    """A token with spaces:credentials bound to the route's environment (``{id}``), or, with
    ``own``, to any environment (the route serves the token's own)."""

    own: bool = False
    public = False

    def check(self, request: web.Request, principal: Principal) -> None:
        if self.own:
            authorize_own_environment(principal)
        else:
            authorize_bound(principal, request.match_info["id"])

    @property
    def who(self) -> str:
        where = "an environment" if self.own else "this environment"
        return f"a token with `{CREDENTIALS_SCOPE}` bound to {where}"

    @property
    def forbids(self) -> bool:
        return True


PUBLIC = Access()


class Conditions(StrEnum):
    """The preconditions a write takes (checked before its Idempotency-Key is claimed, so a
    malformed one is a 400 however often it is retried): If-Match, and If-None-Match: * too."""

    IF_MATCH = "If-Match"
    IF_MATCH_OR_CREATE = "If-Match, If-None-Match: *"


@dataclass(frozen=True)
class Policy:
    """What a route allows: who may call it, whether it takes an Idempotency-Key, its budget, and
    the preconditions it takes (the handler reads them as ``request[PRECONDITIONS]``)."""

    access: Access
    idempotent: bool = False
    rate: RateClass = RateClass.REQUESTS
    conditions: Conditions | None = None


# Probes, metrics and the docs: anyone, never rate limited.
OPEN = Policy(PUBLIC, rate=RateClass.EXEMPT)
# A path no route matches: the edge answers it (404, 405) after the address's request budget.
UNMATCHED = Policy(PUBLIC)


# A method a view does not have (405, answered by the view): authenticated as its other methods.
AUTHENTICATED = Policy(Roles(frozenset(), ""))


@dataclass
class PolicyTable:
    """Every route's policy, by resource and method (HEAD has its GET's); a method a resource does
    not declare gets the resource's ``fallback``. ``declared`` is the route table's, by method and
    path template; ``bind`` attaches it to the app's routes when the app starts."""

    declared: dict[tuple[str, str], Policy]
    by_route: dict[tuple[AbstractResource, str], Policy] = field(default_factory=dict)
    fallback: dict[AbstractResource, Policy] = field(default_factory=dict)

    def policy(self, resource: AbstractResource, method: str) -> Policy:
        policy = self.by_route.get((resource, "GET" if method == "HEAD" else method))
        return policy if policy is not None else self.fallback[resource]

    def bind(self, app: web.Application) -> None:
        """Give each of the app's routes its declared policy; a route without one is a
        programming error, refused here."""
        declared, missing = self.declared, []
        for resource in app.router.resources():
            path = resource.canonical
            methods = {route.method for route in resource}
            if hdrs.METH_ANY in methods:  # a view: the methods it has
                handler = next(iter(resource)).handler
                methods = {method for method in hdrs.METH_ALL if hasattr(handler, method.lower())}
            methods.discard(hdrs.METH_HEAD)
            policies = []
            for method in sorted(methods):
                policy = declared.get((method, path))
                if policy is None:
                    missing.append(f"{method} {path}")
                    continue
                self.by_route[(resource, method)] = policy
                policies.append(policy)
            public = [policy for policy in policies if policy.access.public]
            self.fallback[resource] = public[0] if public and len(public) == len(policies) else AUTHENTICATED
        if missing:
            raise RuntimeError(f"routes without a policy in the route table: {', '.join(missing)}")


POLICIES: web.AppKey[PolicyTable] = web.AppKey("route_policies")


@web.middleware
async def policy_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The route's policy: authenticate, spend the budget, authorize, run once per key (above)."""
    resource = matched_resource(request)
    app = request.app
    policy = UNMATCHED if resource is None else app[POLICIES].policy(resource, request.method)
    if not policy.access.public:
        principal = await authenticate(request)
        request[PRINCIPAL] = principal
    limits = app[RATE_LIMITS]
    budget = limits.requests if policy.rate is RateClass.REQUESTS else None
    decision = None
    if budget is not None:
        principal_or_none = request.get(PRINCIPAL)
        key = f"token:{principal_or_none.token_id}" if principal_or_none else f"address:{request.remote}"
        decision = await budget.take(key)
        if decision is not None and not decision.allowed:
            whose = "this token" if principal_or_none else "this client address"
            raise budget.exceeded(decision, f"Rate limit exceeded for {whose}.")
    if not policy.access.public:
        policy.access.check(request, request[PRINCIPAL])
    if policy.conditions is not None:
        create = policy.conditions is Conditions.IF_MATCH_OR_CREATE
        request[PRECONDITIONS] = preconditions(request, allow_create_only=create)
    if policy.idempotent:
        response = await run_idempotently(request, lambda: handler(request))
    else:
        response = await handler(request)
    if decision is not None:
        assert budget is not None
        response.headers.update(budget.headers(decision))
    return response


def middlewares(*, metrics: bool) -> list[Middleware]:
    """The pipeline's layers, outermost first (see the module's docstring)."""
    edge = request_context_middleware(
        metrics=metrics, answer_failure=answer_failure, answering=close_connection_while_draining
    )
    return [edge, policy_middleware]


def declare_policies(app: web.Application, declared: Iterable[tuple[str, str, Policy]]) -> None:
    """The route table's policies, attached to the app's routes when it starts (every route is
    added by then)."""
    table = PolicyTable({(method, path): policy for method, path, policy in declared})
    app[POLICIES] = table

    async def bind(app: web.Application) -> None:
        table.bind(app)

    app.on_startup.append(bind)


def add_route(app: web.Application, method: str, path: str, handler: Handler, policy: Policy) -> None:
    """Add one route with its policy, beside the route table (an embedding application's own)."""
    app.router.add_route(method, path, handler)
    app[POLICIES].declared[(method, path)] = policy
