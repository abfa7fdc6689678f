"""``/api/settings/spaces``: read, replace, patch and delete the global Spaces configuration."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg
import orjson
from aiohttp import web
from aiohttp_apispec import docs

from backends import SecretBackend
from spacesvc import postgres
from spacesvc.audit.model import Action
from spacesvc.http import conditional
from spacesvc.http.authentication import authenticate_again, request_actor
from spacesvc.http.conditional import (
    CREATE_ONLY_PARAM,
    IF_MATCH_PARAM,
    PRECONDITIONS,
    format_etag,
    names_version,
    not_modified,
    not_modified_response,
    preferred_wait,
)
from spacesvc.http.errors import readonly_field
from spacesvc.http.jsonio import json_response, read_json_object, timestamp
from spacesvc.http.openapi import IDEMPOTENCY_KEY_PARAM, SECURITY, errors, etag_header, json_body, ok
from spacesvc.http.request_context import PRINCIPAL
from spacesvc.http.schemas import SuccessSchema
from spacesvc.live import LIVE, PerConfig
from spacesvc.resources.versioned import Preconditions
from spacesvc.secret_backend import SECRET_BACKEND
from spacesvc.spaces import service
from spacesvc.spaces.model import SpacesConfig, SpacesInput, WriteOutcome, not_configured
from spacesvc.spaces.resource import SPACES
from spacesvc.spaces.schemas import (
    SpacesConfigEnvelopeSchema,
    SpacesConfigInput,
    SpacesConfigPatchInput,
    SpacesStatusSchema,
)
from spacesvc.spaces.service import ConfigWrite
from spacesvc.spaces.validation import parse_patch, parse_put
from spacesvc.spaces.writes import SPACES_WRITES

# OpenAPI links from a write's answer to what a client does next (schemathesis follows them).
AFTER_A_WRITE = {
    "GetConfig": {"operationId": "getSpacesConfig"},
    "PatchConfig": {"operationId": "patchSpacesConfig", "parameters": {"header.If-Match": "$response.header.ETag"}},
    "DeleteConfig": {"operationId": "deleteSpacesConfig", "parameters": {"header.If-Match": "$response.header.ETag"}},
}


def present(config: SpacesConfig, backend: SecretBackend) -> dict[str, Any]:
    """The configuration as clients see it: BRIDGEPORT's fields plus the read-only extras, no secret."""
    fields = config.fields
    return {
        "id": config.id,
        "accessKey": fields.access_key,
        "region": fields.region,
        "endpoint": fields.effective_endpoint,
        "buckets": list(fields.buckets),
        "hasSecretKey": backend.has_secret(config.secret_stored),
        "secretBackend": config.secret_backend,
        "version": config.version,
        "createdAt": timestamp(config.created_at),
        "updatedAt": timestamp(config.updated_at),
        "updatedBy": config.updated_by,
        "enabledEnvironments": [
            {"id": item.id, "environmentId": item.environment_id, "enabled": item.enabled}
            for item in config.enabled_environments
        ],
    }


# The GET body, rendered once per configuration the live state hands out.
rendered: PerConfig[bytes] = PerConfig()


def body_of(config: SpacesConfig, backend: SecretBackend) -> bytes:
    body = rendered.get(config, backend)
    if body is None:
        body = rendered.keep(orjson.dumps({"configured": True, "config": present(config, backend)}), config, backend)
    return body


def etag(config: SpacesConfig) -> dict[str, str]:
    return {"ETag": format_etag(config.version)}


class SpacesSettingsView(web.View):
    URL_PATH = "/api/settings/spaces"

    @property
    def backend(self) -> SecretBackend:
        return self.request.app[SECRET_BACKEND]

    def connection(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        return postgres.acquire(self.request.app)

    @docs(
        tags=["settings"],
        summary="Get the global Spaces configuration",
        operationId="getSpacesConfig",
        parameters=[conditional.IF_NONE_MATCH_PARAM, conditional.PREFER_PARAM],
        security=SECURITY,
        responses={
            200: {
                **ok(SpacesStatusSchema, "The configuration, or configured: false", etag=etag_header(always=False)),
                "headers": {
                    **ok(SpacesStatusSchema, "", etag=etag_header(always=False))["headers"],
                    **conditional.PREFERENCE_APPLIED,
                },
            },
            304: {
                "description": "The version named in If-None-Match is current",
                "headers": {**etag_header(always=True), **conditional.PREFERENCE_APPLIED},
            },
            **errors(401, 403, 429, 503),
        },
    )
    async def get(self) -> web.Response:
        app, request = self.request.app, self.request
        config = await app[LIVE].read(app, SPACES)
        wait = preferred_wait(request)
        if config is not None and wait is not None and names_version(request, config.version):
            config = await app[LIVE].watch(
                app, SPACES, config, wait, lambda: authenticate_again(self.request), self.request[PRINCIPAL].expires_at
            )
            applied = {"Preference-Applied": f"wait={wait}"}
        else:
            applied = {}
        if config is None:
            return json_response({"configured": False, "config": None}, headers=applied)
        if not_modified(request, config.version):
            return not_modified_response(config.version, applied)
        return json_response(body_of(config, self.backend), headers={**etag(config), **applied})

    head = get  # HEAD is answered as GET, without the body

    @docs(
        tags=["settings"],
        summary="Create or replace the global Spaces configuration (admin only)",
        operationId="putSpacesConfig",
        description="A full replacement of the non-secret fields; omitted optional fields take their defaults. "
        "secretKey is required on creation (unless the backend is env); omitted or empty keeps the stored one. "
        "A PUT that changes nothing answers 200 without bumping version.",
        security=SECURITY,
        parameters=[IF_MATCH_PARAM, CREATE_ONLY_PARAM, IDEMPOTENCY_KEY_PARAM],
        requestBody=json_body(SpacesConfigInput, "The configuration"),
        responses={
            200: ok(
                SpacesConfigEnvelopeSchema,
                "Replaced (or unchanged)",
                etag=etag_header(always=True),
                replayable=True,
                links=AFTER_A_WRITE,
            ),
            201: ok(
                SpacesConfigEnvelopeSchema,
                "Created",
                etag=etag_header(always=True),
                replayable=True,
                links=AFTER_A_WRITE,
            ),
            **errors(400, 401, 403, 408, 409, 412, 413, 415, 422, 429, 503),
        },
    )
    async def put(self) -> web.StreamResponse:
        return await self._put(self.request[PRECONDITIONS])

    async def _put(self, conditions: Preconditions) -> web.Response:
        wanted = parse_put(await read_json_object(self.request))
        self._refuse_unwritable_secret(wanted.secret, "PUT")
        outcome = await self._write(lambda current: wanted, Action.REPLACED, conditions)
        return self._config_response(outcome.config, status=201 if outcome.created else 200)

    async def _write(
        self, build: Callable[[SpacesConfig | None], SpacesInput], action: Action, conditions: Preconditions
    ) -> WriteOutcome:
        """Write with the writes that arrive meanwhile (``spacesvc.spaces.writes``); answered once
        committed, and kept in memory: this process sees its own write at once."""
        write = ConfigWrite(build, request_actor(self.request), action, conditions)
        return await self.request.app[SPACES_WRITES].submit(write)

    @docs(
        tags=["settings"],
        summary="Change some fields of the Spaces configuration (JSON Merge Patch, RFC 7396)",
        operationId="patchSpacesConfig",
        description="null resets an optional field to its default; arrays are replaced whole. "
        "A PATCH that changes nothing answers 200 without bumping version.",
        security=SECURITY,
        parameters=[IF_MATCH_PARAM, IDEMPOTENCY_KEY_PARAM],
        requestBody=json_body(SpacesConfigPatchInput(partial=True), "The fields to change"),
        responses={
            200: ok(
                SpacesConfigEnvelopeSchema,
                "Changed (or unchanged)",
                etag=etag_header(always=True),
                replayable=True,
                links=AFTER_A_WRITE,
            ),
            **errors(400, 401, 403, 404, 408, 409, 412, 413, 415, 422, 429, 503),
        },
    )
    async def patch(self) -> web.StreamResponse:
        return await self._patch(self.request[PRECONDITIONS])

    async def _patch(self, conditions: Preconditions) -> web.Response:
        patch = parse_patch(await read_json_object(self.request))
        self._refuse_unwritable_secret(patch.secret, "PATCH")

        def build(current: SpacesConfig | None) -> SpacesInput:
            if current is None:
                raise not_configured()
            return SpacesInput(patch.apply(current.fields), patch.secret)

        outcome = await self._write(build, Action.PATCHED, conditions)
        return self._config_response(outcome.config, status=200)

    @docs(
        tags=["settings"],
        summary="Delete the Spaces configuration and its stored secret",
        operationId="deleteSpacesConfig",
        security=SECURITY,
        parameters=[IF_MATCH_PARAM, IDEMPOTENCY_KEY_PARAM],
        responses={
            200: ok(SuccessSchema, "Deleted", replayable=True),
            **errors(400, 401, 403, 404, 409, 412, 429, 503),
        },
    )
    async def delete(self) -> web.StreamResponse:
        return await self._delete(self.request[PRECONDITIONS])

    async def _delete(self, conditions: Preconditions) -> web.Response:
        async with self.request.app[LIVE].writing(SPACES) as write, self.connection() as conn:
            removed = await service.delete_config(
                conn, self.backend, actor=request_actor(self.request), preconditions=conditions
            )
            if removed is not None:
                write.kept(None)
        if removed is None:
            raise not_configured()
        return json_response({"success": True})

    def _refuse_unwritable_secret(self, secret: str | None, method: str) -> None:
        if secret is not None and not self.backend.writable:
            raise readonly_field("secretKey", method, self.backend.read_only_hint)

    def _config_response(self, config: SpacesConfig, *, status: int) -> web.Response:
        return json_response({"config": present(config, self.backend)}, status=status, headers=etag(config))
