"""``POST /api/environments/{id}/spaces/test``: BRIDGEPORT's connection test of an environment,
trying the key that environment is delivered (its enablement decides: 404 when not enabled).

Callers: role admin or operator with settings:read (as the global test), or a token bound to that
environment with the scope spaces:credentials (a workload checking its own credentials).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp_apispec import docs

from spacesvc import postgres
from spacesvc.environments.views import ENVIRONMENT_ID_PARAM
from spacesvc.errors import NotFound
from spacesvc.http.openapi import SECURITY
from spacesvc.spaces.connection import TEST_RESPONSES, answer_test, target_for
from spacesvc.spaces.credentials import enabled_config, secret_of


class EnvironmentTestView(web.View):
    URL_PATH = "/api/environments/{id}/spaces/test"

    @docs(
        tags=["environments"],
        summary="Test the credentials this environment is delivered against the endpoint",
        operationId="testEnvironmentSpacesConnection",
        description="As POST /api/settings/spaces/test without a body, for an environment Spaces is enabled "
        "for. Role admin or operator with settings:read, or a token bound to this environment with "
        "spaces:credentials (403 for another environment).",
        security=SECURITY,
        parameters=[ENVIRONMENT_ID_PARAM],
        responses={
            status: answer for status, answer in TEST_RESPONSES.items() if status not in (408, 409, 413, 415, 422)
        },
    )
    async def post(self) -> web.Response:
        request = self.request
        environment_id = request.match_info["id"]
        async with postgres.acquire(request.app) as conn:
            environment, config = await enabled_config(conn, environment_id)
        secret = await secret_of(request.app, config)
        if secret is None:
            raise NotFound(
                "No secretKey is stored for the Spaces configuration.",
                hint="Set secretKey with PUT or PATCH (for the env backend: SPACESVC_SPACES_SECRET_KEY).",
            )
        target, buckets = target_for(config.fields, secret), list(config.fields.buckets)
        return await answer_test(request, target, buckets, config_id=config.id, environment_id=environment.id)
