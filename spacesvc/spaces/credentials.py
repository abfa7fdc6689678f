"""What a workload in an environment reads: ``GET /api/environments/{id}/spaces/credentials``
(the one response that carries the secret) and ``GET /api/environments/{id}/spaces/buckets``.

Both answer only when the configuration is enabled for the environment (BRIDGEPORT's
``getSpacesConfigForEnvironment``). The credentials need a token with the scope
``spaces:credentials`` bound to that environment, whatever its role: the secret stays write-only
for people. Each delivery is recorded in the audit trail before it is answered.

A delivery reads what it can from memory: the configuration and its enablement (``spacesvc.live``),
and, from a backend whose secret changes only with the configuration's version (``db``), the secret
read for that version; then one statement records it. Anything memory cannot vouch for (not
configured, not enabled, an environment gone) is decided by the database.
"""

from __future__ import annotations

import asyncpg
from aiohttp import web
from aiohttp_apispec import docs
from marshmallow import Schema, fields

from backends import SecretBackend
from spacesvc import postgres
from spacesvc.audit import queries as audit
from spacesvc.environments import queries as environments
from spacesvc.environments.model import Environment
from spacesvc.environments.views import ENVIRONMENT_ID_PARAM
from spacesvc.errors import NotFound
from spacesvc.http.authentication import request_actor
from spacesvc.http.authorization import ANY_ROLE, READ, authorize_for_environment, forbidden_scope
from spacesvc.http.conditional import IF_NONE_MATCH_PARAM, etag_for, not_modified, not_modified_response
from spacesvc.http.jsonio import json_response
from spacesvc.http.openapi import SECURITY, errors, etag_header, ok
from spacesvc.live import PerConfig
from spacesvc.metrics import CREDENTIAL_DELIVERIES
from spacesvc.spaces import queries
from spacesvc.spaces.connection import bucket_list
from spacesvc.spaces.model import SpacesConfig, not_configured
from spacesvc.spaces.schemas import BucketListSchema
from spacesvc.tokens.model import CREDENTIALS_SCOPE
from spacesvc.typedefs import LIVE, PRINCIPAL, SECRET_BACKEND

NO_STORE = {"Cache-Control": "no-store"}


class CredentialsSchema(Schema):
    accessKey = fields.String(required=True)
    secretKey = fields.String(required=True)
    region = fields.String(required=True)
    endpoint = fields.String(required=True)
    buckets = fields.List(fields.String(), required=True)
    version = fields.Integer(required=True)


def enabled_for(config: SpacesConfig, environment_id: str) -> bool:
    return any(item.environment_id == environment_id and item.enabled for item in config.enabled_environments)


# The secret of the configuration in memory, from a backend whose secret changes only with the
# version (SecretBackend.secret_follows_version); any other is read on every delivery, so its
# outages and revocations show at once.
secrets_read: PerConfig[str] = PerConfig()


async def secret_of(conn: asyncpg.Connection, backend: SecretBackend, config: SpacesConfig) -> str | None:
    secret = secrets_read.get(config, backend)
    if secret is None:
        secret = await queries.stored_secret(conn, backend, config)
        if secret is not None and backend.secret_follows_version:
            secrets_read.keep(secret, config, backend)
    return secret


async def enabled_config(conn: asyncpg.Connection, environment_id: str) -> tuple[Environment, SpacesConfig]:
    """The environment and the configuration, when the configuration is enabled for it; else NotFound."""
    environment = await environments.get(conn, environment_id)
    config = await queries.get_config(conn)
    if config is None:
        raise not_configured()
    if not enabled_for(config, environment.id):
        raise NotFound(
            f"Spaces is not enabled for the environment {environment.name}.",
            hint="An admin enables it with PUT /api/settings/spaces/environments/{environmentId}.",
        )
    return environment, config


class CredentialsView(web.View):
    URL_PATH = "/api/environments/{id}/spaces/credentials"

    @docs(
        tags=["environments"],
        summary="The Spaces credentials for a workload in this environment (a bound spaces:credentials token)",
        operationId="getSpacesCredentials",
        security=SECURITY,
        parameters=[ENVIRONMENT_ID_PARAM, IF_NONE_MATCH_PARAM],
        responses={
            200: {
                **ok(CredentialsSchema, "The credentials", etag=etag_header(always=True)),
                "description": "The credentials (Cache-Control: no-store)",
            },
            304: {"description": "The version named in If-None-Match is current"},
            **errors(401, 403, 404, 429, 503),
        },
    )
    async def get(self) -> web.Response:
        request = self.request
        principal = request[PRINCIPAL]
        environment_id = request.match_info["id"]
        if CREDENTIALS_SCOPE not in principal.scopes or principal.environment_id != environment_id:
            raise forbidden_scope(
                CREDENTIALS_SCOPE,
                "Only a token with the scope spaces:credentials, bound to this environment, reads its credentials.",
                hint="spacesvc tokens create --scope spaces:credentials --environment NAME_OR_ID …",
            )
        app = request.app
        backend = app[SECRET_BACKEND]
        config = await app[LIVE].config(app)
        if config is None or not enabled_for(config, environment_id):
            async with postgres.acquire(app) as conn:  # the database's answer: which 404, or go on
                _, config = await enabled_config(conn, environment_id)
        if not_modified(request, config.version):
            return not_modified_response(config.version, NO_STORE)
        async with postgres.acquire(app) as conn:
            secret = await secret_of(conn, backend, config)
            if secret is None:
                raise NotFound(
                    "No secretKey is stored for the Spaces configuration.",
                    hint="Set secretKey with PUT or PATCH (for the env backend: SPACESVC_SPACES_SECRET_KEY).",
                )
            if not await audit.record_delivery(
                conn, environment_id, request_actor(request), principal.name, config.version
            ):
                await environments.get(conn, environment_id)  # gone since: its 404
        CREDENTIAL_DELIVERIES.inc()
        fields_ = config.fields
        body = {
            "accessKey": fields_.access_key,
            "secretKey": secret,
            "region": fields_.region,
            "endpoint": fields_.effective_endpoint,
            "buckets": list(fields_.buckets),
            "version": config.version,
        }
        return json_response(body, headers={**NO_STORE, "ETag": etag_for(config.version)})


class EnvironmentBucketsView(web.View):
    URL_PATH = "/api/environments/{id}/spaces/buckets"

    @docs(
        tags=["environments"],
        summary="The buckets, when Spaces is enabled for this environment",
        operationId="listEnvironmentBuckets",
        description="Any role with settings:read, or a token bound to this environment with spaces:credentials "
        "(403 for another environment).",
        security=SECURITY,
        parameters=[ENVIRONMENT_ID_PARAM],
        responses={200: ok(BucketListSchema, "The buckets"), **errors(400, 401, 403, 404, 429, 503)},
    )
    async def get(self) -> web.Response:
        environment_id = self.request.match_info["id"]
        authorize_for_environment(self.request[PRINCIPAL], environment_id, ANY_ROLE, READ)
        async with postgres.acquire(self.request.app) as conn:
            await enabled_config(conn, environment_id)
        return json_response(await bucket_list(self.request))
