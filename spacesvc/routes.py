"""The route table: every route, its handler, and per method its policy (who may call it, whether
it takes an Idempotency-Key, its rate class; ``spacesvc.http.pipeline``). docs/api.md's route
table and the OpenAPI document are checked against it (tests/test_docs.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from aiohttp import web

from spacesvc.audit.views import AuditLogsView, AuditView
from spacesvc.environments.views import EnvironmentsView, EnvironmentView
from spacesvc.health import healthz, readyz
from spacesvc.http.authorization import ADMIN, ADMIN_OR_OPERATOR, ANY_ROLE, READ, WRITE
from spacesvc.http.openapi import DOCS_PATH, DOCS_STATIC_PATH, OPENAPI_PATH
from spacesvc.http.pipeline import OPEN, Bound, Conditions, Policy, Roles, RolesOrBound
from spacesvc.http.types import Handler
from spacesvc.keys.views import IssuerTestView, IssuerView, RotateView
from spacesvc.metrics import metrics_view
from spacesvc.spaces.connection import SpacesBucketsView, SpacesTestView
from spacesvc.spaces.credentials import CredentialsView, EnvironmentBucketsView, OwnCredentialsView
from spacesvc.spaces.enablement import SpacesEnvironmentsView, SpacesEnvironmentView
from spacesvc.spaces.environment_test import EnvironmentTestView
from spacesvc.spaces.views import SpacesSettingsView

READER = Policy(Roles(ANY_ROLE, READ))
ADMIN_WRITE = Policy(Roles(ADMIN, WRITE), idempotent=True)
# A versioned resource's writes: If-Match; its PUT may create (If-None-Match: *).
CONDITIONAL_WRITE = Policy(Roles(ADMIN, WRITE), idempotent=True, conditions=Conditions.IF_MATCH)
CREATING_WRITE = Policy(Roles(ADMIN, WRITE), idempotent=True, conditions=Conditions.IF_MATCH_OR_CREATE)
AUDITOR = Policy(Roles(ADMIN, READ))
# A test of the saved credentials: admin or operator (as BRIDGEPORT); of proposed ones, which
# choose the endpoint the secret goes to: admin with settings:write.
TEST = Policy(Roles(ADMIN_OR_OPERATOR, READ, with_body=Roles(ADMIN, WRITE)), idempotent=True)


@dataclass(frozen=True)
class Route:
    path: str
    target: type[web.View] | Handler
    policies: dict[str, Policy]

    @property
    def is_view(self) -> bool:
        return isinstance(self.target, type) and issubclass(self.target, web.View)


def _view(view: type[web.View], **policies: Policy) -> Route:
    return Route(view.URL_PATH, view, {method.upper(): policy for method, policy in policies.items()})  # type: ignore[attr-defined]


ROUTES = (
    _view(SpacesSettingsView, get=READER, put=CREATING_WRITE, patch=CONDITIONAL_WRITE, delete=CONDITIONAL_WRITE),
    _view(SpacesTestView, post=TEST),
    _view(SpacesBucketsView, get=READER),
    _view(SpacesEnvironmentsView, get=READER),
    _view(SpacesEnvironmentView, put=ADMIN_WRITE),
    _view(EnvironmentsView, get=READER, post=ADMIN_WRITE),
    _view(EnvironmentView, delete=ADMIN_WRITE),
    _view(EnvironmentBucketsView, get=Policy(RolesOrBound(ANY_ROLE, READ))),
    _view(EnvironmentTestView, post=Policy(RolesOrBound(ADMIN_OR_OPERATOR, READ))),
    _view(CredentialsView, get=Policy(Bound())),
    _view(OwnCredentialsView, get=Policy(Bound(own=True))),
    _view(AuditView, get=AUDITOR),
    _view(AuditLogsView, get=AUDITOR),
    _view(IssuerView, get=AUDITOR, put=CREATING_WRITE, delete=CONDITIONAL_WRITE),
    _view(IssuerTestView, post=ADMIN_WRITE),
    _view(RotateView, post=ADMIN_WRITE),
    Route("/healthz", healthz, {"GET": OPEN}),
    Route("/readyz", readyz, {"GET": OPEN}),
)
METRICS = Route("/metrics", metrics_view, {"GET": OPEN})
# Added by the OpenAPI setup (spacesvc.http.openapi): the document, its page and the page's assets.
DOCS = {("GET", OPENAPI_PATH): OPEN, ("GET", DOCS_PATH): OPEN, ("GET", DOCS_STATIC_PATH): OPEN}


def routes(*, metrics: bool) -> tuple[Route, ...]:
    return (*ROUTES, METRICS) if metrics else ROUTES


def add_routes(app: web.Application, *, metrics: bool) -> None:
    for route in routes(metrics=metrics):
        if route.is_view:
            app.router.add_view(route.path, route.target)  # type: ignore[arg-type]
        else:
            app.router.add_get(route.path, route.target, allow_head=True)


def declared(*, metrics: bool) -> Iterator[tuple[str, str, Policy]]:
    """Every (method, path template, policy) the app serves."""
    for route in routes(metrics=metrics):
        for method, policy in route.policies.items():
            yield method, route.path, policy
    for (method, path), policy in DOCS.items():
        yield method, path, policy
