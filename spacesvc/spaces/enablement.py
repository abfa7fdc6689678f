"""BRIDGEPORT's enablement routes: ``/api/settings/spaces/environments`` lists every environment
with whether the configuration is enabled for it; ``…/{environmentId}`` enables or disables it."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from aiohttp_apispec import docs
from marshmallow import RAISE, Schema, fields, validate

from spacesvc import postgres
from spacesvc.http.authentication import request_actor
from spacesvc.http.errors import ApiError, validation_error
from spacesvc.http.jsonio import json_response, read_json_object
from spacesvc.http.openapi import IDEMPOTENCY_KEY_PARAM, SECURITY, errors, json_body, ok
from spacesvc.http.schemas import JsonBoolean, load_body
from spacesvc.keys import grants
from spacesvc.keys.issuers import PERMISSIONS
from spacesvc.keys.runtime import KEYS
from spacesvc.keys.service import KEEP, Keep
from spacesvc.live import LIVE
from spacesvc.settings import SETTINGS
from spacesvc.spaces.resource import SPACES


class EnvironmentKeySchema(Schema):
    accessKey = fields.String(required=True)
    createdAt = fields.String(required=True)
    rotatesAt = fields.String(required=True, allow_none=True)


class SpacesEnvironmentSchema(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    spacesEnabled = fields.Boolean(required=True)
    buckets = fields.List(fields.String(), required=True, metadata={"description": "the buckets it is granted"})
    permission = fields.String(required=True, metadata={"enum": ["read", "readwrite"]})
    key = fields.Nested(
        EnvironmentKeySchema,
        required=True,
        allow_none=True,
        metadata={"description": "its own key (with a key issuer), never the secret; else null"},
    )


class SpacesEnvironmentListSchema(Schema):
    environments = fields.List(fields.Nested(SpacesEnvironmentSchema), required=True)


class EnablementInput(Schema):
    class Meta:
        unknown = RAISE

    enabled = JsonBoolean(required=True)
    buckets = fields.List(
        fields.String(),
        allow_none=True,
        validate=validate.Length(max=100),
        metadata={"description": "a subset of the configuration's buckets; null: all (omitted: as stored)"},
    )
    permission = fields.String(validate=validate.OneOf(PERMISSIONS), metadata={"description": "default readwrite"})


def invalid_enablement(field: str, failing: Mapping[str, list[str]]) -> ApiError:
    if field in ("buckets", "permission"):
        return validation_error(f"{field}: {failing[field][0]}", field=field)
    return validation_error('The body must be {"enabled": true} or {"enabled": false}.', field=field)


class EnablementResultSchema(Schema):
    success = fields.Boolean(required=True)
    enabled = fields.Boolean(required=True)


ENABLEMENT_INPUT = EnablementInput()


class SpacesEnvironmentsView(web.View):
    URL_PATH = "/api/settings/spaces/environments"

    @docs(
        tags=["environments"],
        summary="Every environment, with whether Spaces is enabled for it (all false when not configured)",
        operationId="listSpacesEnvironments",
        security=SECURITY,
        responses={200: ok(SpacesEnvironmentListSchema, "The environments"), **errors(401, 403, 429, 503)},
    )
    async def get(self) -> web.Response:
        async with postgres.acquire(self.request.app) as conn:
            listed = await grants.listing(conn, self.request.app[SETTINGS].key_max_age_seconds)
        return json_response({"environments": listed})

    head = get  # HEAD is answered as GET, without the body


class SpacesEnvironmentView(web.View):
    URL_PATH = "/api/settings/spaces/environments/{environmentId}"

    @docs(
        tags=["environments"],
        summary="Enable or disable Spaces for an environment (admin)",
        operationId="setSpacesEnvironment",
        security=SECURITY,
        parameters=[
            {"in": "path", "name": "environmentId", "required": True, "schema": {"type": "string"}},
            IDEMPOTENCY_KEY_PARAM,
        ],
        requestBody=json_body(EnablementInput, "Whether the environment may use the configuration"),
        responses={
            200: ok(EnablementResultSchema, "Set", replayable=True),
            **errors(400, 401, 403, 404, 408, 409, 413, 415, 429, 503),
        },
    )
    async def put(self) -> web.StreamResponse:
        return await self._put()

    async def _put(self) -> web.Response:
        body = load_body(ENABLEMENT_INPUT, await read_json_object(self.request), invalid_enablement)
        buckets = body.get("buckets", KEEP)
        app = self.request.app
        environment_id = self.request.match_info["environmentId"]
        async with app[LIVE].writing(SPACES) as write:
            try:
                await app[KEYS].keys.set_grants(
                    environment_id,
                    body["enabled"],
                    None if buckets is None else buckets if isinstance(buckets, Keep) else tuple(buckets),
                    body.get("permission"),
                    request_actor(self.request),
                )
            finally:
                write.changed()
        return json_response({"success": True, "enabled": body["enabled"]})
