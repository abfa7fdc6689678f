"""What a workload in an environment reads: ``GET /api/environments/{id}/spaces/credentials``
(the one response that carries the secret), the same for the token's own environment at
``GET /api/spaces/credentials``, and ``GET /api/environments/{id}/spaces/buckets``.

Both answer only when the configuration is enabled for the environment (BRIDGEPORT's
``getSpacesConfigForEnvironment``). The credentials need a token with the scope
``spaces:credentials`` bound to that environment, whatever its role: the secret stays write-only
for people. Each delivery is recorded in the audit trail before it is answered.

A delivery reads what it can from memory: the configuration and its enablement (``spacesvc.live``),
and the secret read for that version, for as long as the backend allows (``spacesvc.spaces.secret_memory``);
then its audit entry is committed with the others of its batch (``spacesvc.audit.deliveries``).
Anything memory cannot vouch for (not configured, not enabled, an environment gone) is decided by
the database.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
from aiohttp import web
from aiohttp_apispec import docs
from marshmallow import Schema, fields

from spacesvc import postgres
from spacesvc.audit.deliveries import DELIVERIES, Delivery
from spacesvc.environments import queries as environments
from spacesvc.environments.model import Environment
from spacesvc.environments.views import ENVIRONMENT_ID_PARAM
from spacesvc.errors import NotFound, Unavailable
from spacesvc.http.authentication import authenticate_again, request_actor
from spacesvc.http.conditional import (
    IF_NONE_MATCH_PARAM,
    PREFER_PARAM,
    PREFERENCE_APPLIED,
    format_etag,
    names_version,
    not_modified,
    not_modified_response,
    preferred_wait,
)
from spacesvc.http.errors import validation_error
from spacesvc.http.jsonio import json_response, timestamp
from spacesvc.http.openapi import SECURITY, errors, etag_header, ok
from spacesvc.http.request_context import PRINCIPAL
from spacesvc.instruments import CREDENTIAL_DELIVERIES
from spacesvc.keys import store as keys_store
from spacesvc.keys.resource import ISSUER
from spacesvc.keys.service import rotates_at
from spacesvc.live import LIVE
from spacesvc.secret_backend import SECRET_BACKEND
from spacesvc.settings import SETTINGS
from spacesvc.spaces import queries, service
from spacesvc.spaces.connection import bucket_list
from spacesvc.spaces.model import SpacesConfig, not_configured
from spacesvc.spaces.resource import SPACES
from spacesvc.spaces.schemas import BucketListSchema
from spacesvc.spaces.secret_memory import SecretMemory

NO_STORE = {"Cache-Control": "no-store"}


class CredentialsSchema(Schema):
    accessKey = fields.String(required=True)
    secretKey = fields.String(required=True)
    region = fields.String(required=True)
    endpoint = fields.String(required=True)
    buckets = fields.List(fields.String(), required=True)
    version = fields.Integer(required=True)
    permission = fields.String(
        metadata={"enum": ["read", "readwrite"], "description": "with a key issuer: the environment's own key's"}
    )
    rotatesAt = fields.String(allow_none=True, metadata={"description": "with a key issuer: when the key rotates"})


def not_minted_yet() -> Unavailable:
    return Unavailable(
        "issuer",
        "The environment's own key is not minted yet; reconciliation creates it.",
        hint="spacesvc keys reconcile creates it now.",
    )


class CredentialProcessSchema(Schema):
    Version = fields.Integer(required=True, metadata={"enum": [1]})
    AccessKeyId = fields.String(required=True)
    SecretAccessKey = fields.String(required=True)
    Expiration = fields.String(
        required=True, metadata={"format": "date-time", "description": "fetch again before this"}
    )


def enabled_for(config: SpacesConfig, environment_id: str) -> bool:
    return any(item.environment_id == environment_id and item.enabled for item in config.enabled_environments)


# The secret of the configuration in memory (SecretBackend.secret_kept_seconds says for how long).
secrets_read = SecretMemory()


async def secret_of(app: web.Application, config: SpacesConfig) -> str | None:
    """The secret to deliver with ``config``; a pool connection only when it is not in memory."""
    backend = app[SECRET_BACKEND]

    async def read() -> str | None:
        async with postgres.acquire(app) as conn:
            return await service.stored_secret(conn, backend, config)

    return await secrets_read.secret(config, backend, read)


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


FORMATS = ("json", "credential-process")
FORMAT_PARAM = {
    "in": "query",
    "name": "format",
    "required": False,
    "schema": {"type": "string", "enum": list(FORMATS), "default": "json"},
    "description": "credential-process: the answer an AWS SDK's credential_process expects "
    "(Version, AccessKeyId, SecretAccessKey, Expiration).",
}
CREDENTIALS_OK = ok(CredentialsSchema, "", etag=etag_header(always=True))
CREDENTIALS_RESPONSES = {
    200: {
        "description": "The credentials (Cache-Control: no-store); with ?format=credential-process, "
        "what an AWS SDK's credential_process expects",
        "headers": {**CREDENTIALS_OK["headers"], **PREFERENCE_APPLIED},
        "content": {"application/json": {"schema": {"oneOf": [CredentialsSchema, CredentialProcessSchema]}}},
    },
    304: {
        "description": "The version named in If-None-Match is current",
        "headers": {**etag_header(always=True), **PREFERENCE_APPLIED},
    },
    **errors(400, 401, 403, 404, 429, 503),
}


def expiration(ttl_seconds: float, rotates_at: datetime | None) -> datetime:
    """When a delivered key should be fetched again: now + the TTL, or the key's rotation if earlier."""
    expires = datetime.now(UTC) + timedelta(seconds=ttl_seconds)
    return expires if rotates_at is None else min(expires, rotates_at)


def requested_format(request: web.Request) -> str:
    wanted = request.query.get("format", "json")
    if wanted not in FORMATS:
        raise validation_error(f"format must be one of: {', '.join(FORMATS)}.", field="format")
    return wanted


async def deliver(request: web.Request, environment_id: str) -> web.Response:
    """The credentials of ``environment_id`` for the request's token (the route's policy saw that
    it is bound to it); a watch (``Prefer: wait`` with ``If-None-Match`` naming the version) holds
    until they change."""
    principal = request[PRINCIPAL]
    wanted = requested_format(request)
    app = request.app
    config = await delivered_config(app, environment_id)
    wait = preferred_wait(request)
    applied: dict[str, str] = {}
    if wait is not None and names_version(request, config.version):
        watched = await app[LIVE].watch(
            app, SPACES, config, wait, lambda: authenticate_again(request), request[PRINCIPAL].expires_at
        )
        if watched is None or not enabled_for(watched, environment_id):
            watched = await delivered_config(app, environment_id)  # deleted or disabled meanwhile: its 404
        config = watched
        applied = {"Preference-Applied": f"wait={wait}"}
    if not_modified(request, config.version):
        return not_modified_response(config.version, {**NO_STORE, **applied})
    key = None
    issuer = await app[LIVE].read(app, ISSUER)
    if issuer is not None and not issuer.deleted:  # the environment's own key, never the configuration's
        async with postgres.acquire(app) as conn:
            key = await keys_store.active_key(conn, environment_id)
            if key is None:
                raise not_minted_yet()
            secret = await app[SECRET_BACKEND].read(conn, key.secret_location)
    else:
        secret = await secret_of(app, config)
    if secret is None:
        raise NotFound(
            "No secretKey is stored for the Spaces configuration.",
            hint="Set secretKey with PUT or PATCH (for the env backend: SPACESVC_SPACES_SECRET_KEY).",
        )
    delivered = request.method != "HEAD"  # HEAD is answered as GET, but delivers (and records) nothing
    if delivered:
        delivery = Delivery(environment_id, request_actor(request), principal.name, config.version)
        if not await app[DELIVERIES].record(delivery):
            raise environments.unknown_id()  # deleted since
        CREDENTIAL_DELIVERIES.inc()
    fields_ = config.fields
    rotates = None if key is None else rotates_at(key, app[SETTINGS].key_max_age_seconds)
    access_key = fields_.access_key if key is None else key.access_key or ""
    body: dict[str, object]
    if wanted == "credential-process":
        expires = expiration(app[SETTINGS].credential_ttl_seconds, rotates_at=rotates)
        body = {
            "Version": 1,
            "AccessKeyId": access_key,
            "SecretAccessKey": secret,
            "Expiration": expires.isoformat(timespec="seconds").replace("+00:00", "Z"),
        }
    else:
        body = {
            "accessKey": access_key,
            "secretKey": secret,
            "region": fields_.region,
            "endpoint": fields_.effective_endpoint,
            "buckets": list(fields_.buckets if key is None else key.buckets),
            "version": config.version,
        }
        if key is not None:
            body |= {"permission": key.permission, "rotatesAt": None if rotates is None else timestamp(rotates)}
    return json_response(body, headers={**NO_STORE, "ETag": format_etag(config.version), **applied})


async def delivered_config(app: web.Application, environment_id: str) -> SpacesConfig:
    """The configuration, from memory when it is enabled for the environment there; otherwise the
    database decides (which 404, or the configuration after all)."""
    config = await app[LIVE].read(app, SPACES)
    if config is None or not enabled_for(config, environment_id):
        async with postgres.acquire(app) as conn:
            _, config = await enabled_config(conn, environment_id)
    return config


class CredentialsView(web.View):
    URL_PATH = "/api/environments/{id}/spaces/credentials"

    @docs(
        tags=["environments"],
        summary="The Spaces credentials for a workload in this environment (a bound spaces:credentials token)",
        operationId="getSpacesCredentials",
        security=SECURITY,
        parameters=[ENVIRONMENT_ID_PARAM, FORMAT_PARAM, IF_NONE_MATCH_PARAM, PREFER_PARAM],
        responses=CREDENTIALS_RESPONSES,
    )
    async def get(self) -> web.Response:
        return await deliver(self.request, self.request.match_info["id"])

    head = get  # HEAD is answered as GET, without the body


class OwnCredentialsView(web.View):
    URL_PATH = "/api/spaces/credentials"

    @docs(
        tags=["environments"],
        summary="The Spaces credentials of the environment the token is bound to",
        operationId="getOwnSpacesCredentials",
        security=SECURITY,
        parameters=[FORMAT_PARAM, IF_NONE_MATCH_PARAM, PREFER_PARAM],
        responses=CREDENTIALS_RESPONSES,
    )
    async def get(self) -> web.Response:
        environment_id = self.request[PRINCIPAL].environment_id
        assert environment_id is not None  # the route's policy: a token bound to an environment
        return await deliver(self.request, environment_id)

    head = get  # HEAD is answered as GET, without the body


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
        async with postgres.acquire(self.request.app) as conn:
            await enabled_config(conn, environment_id)
        return json_response(await bucket_list(self.request))

    head = get  # HEAD is answered as GET, without the body
