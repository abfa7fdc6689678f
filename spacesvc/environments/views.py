"""``/api/environments``: list, create and delete environments (docs/api.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp_apispec import docs
from marshmallow import RAISE, Schema, fields

from spacesvc import postgres
from spacesvc.changes import TOKENS
from spacesvc.environments import queries
from spacesvc.environments.model import Environment
from spacesvc.http.authentication import request_actor
from spacesvc.http.errors import ApiError, validation_error
from spacesvc.http.jsonio import json_response, read_json_object, timestamp
from spacesvc.http.openapi import IDEMPOTENCY_KEY_PARAM, SECURITY, errors, json_body, ok
from spacesvc.http.schemas import UNKNOWN_FIELD, SuccessSchema, load_body
from spacesvc.live import LIVE
from spacesvc.spaces.resource import SPACES

ENVIRONMENT_ID_PARAM = {"in": "path", "name": "id", "required": True, "schema": {"type": "string"}}


class EnvironmentSchema(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    createdAt = fields.String(required=True, metadata={"format": "date-time"})


class EnvironmentListSchema(Schema):
    environments = fields.List(fields.Nested(EnvironmentSchema), required=True)


class EnvironmentEnvelopeSchema(Schema):
    environment = fields.Nested(EnvironmentSchema, required=True)


class EnvironmentInput(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True, metadata={"pattern": "^[a-z0-9-]{1,63}$", "example": "production"})


ENVIRONMENT_INPUT = EnvironmentInput()


def invalid_environment(field: str, failing: Mapping[str, list[str]]) -> ApiError:
    """An unknown field, or no name that is a string (the name's rule is the data layer's: ``check_name``)."""
    if failing[field] == [UNKNOWN_FIELD]:
        return validation_error(f'Unknown field "{field}".', field=field, hint='Send {"name": …}.')
    return validation_error("name is required: 1 to 63 characters of a-z, 0-9 and '-'.", field="name")


def present(environment: Environment) -> dict[str, Any]:
    return {"id": environment.id, "name": environment.name, "createdAt": timestamp(environment.created_at)}


class EnvironmentsView(web.View):
    URL_PATH = "/api/environments"

    @docs(
        tags=["environments"],
        summary="The environments, by name",
        operationId="listEnvironments",
        security=SECURITY,
        responses={200: ok(EnvironmentListSchema, "The environments"), **errors(401, 403, 429, 503)},
    )
    async def get(self) -> web.Response:
        async with postgres.acquire(self.request.app) as conn:
            listed = await queries.list_environments(conn)
        return json_response({"environments": [present(environment) for environment in listed]})

    head = get  # HEAD is answered as GET, without the body

    @docs(
        tags=["environments"],
        summary="Create an environment (admin)",
        operationId="createEnvironment",
        security=SECURITY,
        parameters=[IDEMPOTENCY_KEY_PARAM],
        requestBody=json_body(EnvironmentInput, "The environment's name"),
        responses={
            201: ok(EnvironmentEnvelopeSchema, "Created", replayable=True),
            **errors(400, 401, 403, 408, 409, 413, 415, 429, 503),
        },
    )
    async def post(self) -> web.StreamResponse:
        return await self._create()

    async def _create(self) -> web.Response:
        name = load_body(ENVIRONMENT_INPUT, await read_json_object(self.request), invalid_environment)["name"]
        async with postgres.acquire(self.request.app) as conn:
            environment = await queries.create(conn, name, request_actor(self.request))
        return json_response({"environment": present(environment)}, status=201)


class EnvironmentView(web.View):
    URL_PATH = "/api/environments/{id}"

    @docs(
        tags=["environments"],
        summary="Delete an environment, its enablement and the tokens bound to it (admin)",
        operationId="deleteEnvironment",
        security=SECURITY,
        parameters=[ENVIRONMENT_ID_PARAM, IDEMPOTENCY_KEY_PARAM],
        responses={200: ok(SuccessSchema, "Deleted", replayable=True), **errors(400, 401, 403, 404, 409, 429, 503)},
    )
    async def delete(self) -> web.StreamResponse:
        return await self._delete()

    async def _delete(self) -> web.Response:
        app = self.request.app
        async with app[LIVE].writing(SPACES) as write, postgres.acquire(app) as conn:
            environment = await queries.get(conn, self.request.match_info["id"])
            await queries.delete(conn, environment, request_actor(self.request))
            write.changed(TOKENS)
        return json_response({"success": True})
