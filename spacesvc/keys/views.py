"""``/api/settings/spaces/issuer`` (what mints environments' keys) and
``/api/environments/{id}/spaces/credentials/rotate`` (docs/keys.md)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp_apispec import docs
from marshmallow import RAISE, Schema, fields, validate

from spacesvc import postgres
from spacesvc.environments.views import ENVIRONMENT_ID_PARAM
from spacesvc.http.authentication import request_actor
from spacesvc.http.conditional import CREATE_ONLY_PARAM, IF_MATCH_PARAM, PRECONDITIONS, format_etag
from spacesvc.http.errors import readonly_field, validation_error
from spacesvc.http.jsonio import json_response, read_json_object, timestamp
from spacesvc.http.openapi import IDEMPOTENCY_KEY_PARAM, SECURITY, errors, etag_header, json_body, ok
from spacesvc.http.schemas import SuccessSchema
from spacesvc.keys import store
from spacesvc.keys.model import TYPES, IssuerConfig, IssuerInput, no_issuer
from spacesvc.keys.resource import ISSUER, ISSUER_TESTED, get_issuer
from spacesvc.keys.runtime import KEYS
from spacesvc.keys.service import rotates_at
from spacesvc.live import LIVE
from spacesvc.secret_backend import SECRET_BACKEND
from spacesvc.settings import SETTINGS
from spacesvc.spaces.resource import SPACES

READONLY = ("hasSecret", "version", "createdAt", "updatedAt", "updatedBy", "configured")
REGION = r"^[a-z0-9][a-z0-9-]{0,31}$"


class IssuerSchema(Schema):
    type = fields.String(required=True, metadata={"enum": list(TYPES)})
    hasSecret = fields.Boolean(required=True)
    version = fields.Integer(required=True)
    createdAt = fields.String(required=True)
    updatedAt = fields.String(required=True)
    updatedBy = fields.String(required=True)
    accessKey = fields.String(metadata={"description": "aws-iam only"})
    region = fields.String(metadata={"description": "aws-iam only"})


class IssuerStatusSchema(Schema):
    configured = fields.Boolean(required=True)
    issuer = fields.Nested(IssuerSchema, allow_none=True, required=True)


class IssuerEnvelopeSchema(Schema):
    issuer = fields.Nested(IssuerSchema, required=True)


class IssuerInputSchema(Schema):
    """digitalocean: {type, apiToken}; aws-iam: {type, accessKey, secretKey, region}."""

    class Meta:
        unknown = RAISE

    type = fields.String(required=True, validate=validate.OneOf(TYPES))
    apiToken = fields.String(load_only=True, validate=validate.Length(max=512))
    accessKey = fields.String(validate=validate.Regexp(r"^[\x21-\x7e]{1,128}$"))
    secretKey = fields.String(load_only=True, validate=validate.Length(max=256))
    region = fields.String(validate=validate.Regexp(REGION))


class IssuerTestSchema(Schema):
    success = fields.Boolean(required=True)
    message = fields.String(required=True)


class RotatedKeySchema(Schema):
    accessKey = fields.String(required=True)
    createdAt = fields.String(required=True)
    rotatesAt = fields.String(allow_none=True, required=True)


class RotationSchema(Schema):
    success = fields.Boolean(required=True)
    key = fields.Nested(RotatedKeySchema, required=True)


INPUT = IssuerInputSchema()


def present(issuer: IssuerConfig) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": issuer.type,
        "hasSecret": True,  # required on creation, and never removed but with the issuer
        "version": issuer.version,
        "createdAt": timestamp(issuer.created_at),
        "updatedAt": timestamp(issuer.updated_at),
        "updatedBy": issuer.updated_by,
    }
    if issuer.type == "aws-iam":
        body |= {"accessKey": issuer.access_key, "region": issuer.region}
    return body


def parse_issuer(body: dict[str, Any]) -> IssuerInput:
    for name in body:
        if name in READONLY:
            raise readonly_field(name, "PUT", "It is assigned by the server.")
    try:
        data = INPUT.load(body)
    except Exception as error:  # marshmallow's ValidationError: name the first failing field
        messages = getattr(error, "normalized_messages", lambda: {"body": ["invalid"]})()
        field = min(messages)
        raise validation_error(f"Invalid issuer: {field}: {messages[field][0]}", field=field) from None
    kind = data["type"]
    allowed = {"digitalocean": {"type", "apiToken"}, "aws-iam": {"type", "accessKey", "secretKey", "region"}}[kind]
    for name in body:
        if name not in allowed:
            raise validation_error(f"{name} is not a field of a {kind} issuer.", field=name)
    if kind == "digitalocean":
        return IssuerInput(kind, None, None, data.get("apiToken") or None)
    if not data.get("accessKey"):
        raise validation_error("accessKey is required for an aws-iam issuer.", field="accessKey")
    return IssuerInput(kind, data["accessKey"], data.get("region") or "us-east-1", data.get("secretKey") or None)


class IssuerView(web.View):
    URL_PATH = "/api/settings/spaces/issuer"

    @docs(
        tags=["keys"],
        summary="The key issuer that mints each environment's own key (never its secret)",
        operationId="getKeyIssuer",
        security=SECURITY,
        responses={
            200: ok(IssuerStatusSchema, "The issuer, or configured: false", etag=etag_header(always=False)),
            **errors(401, 403, 429, 503),
        },
    )
    async def get(self) -> web.Response:
        async with postgres.acquire(self.request.app) as conn:
            issuer = await get_issuer(conn)
        if issuer is None or issuer.deleted:
            return json_response({"configured": False, "issuer": None})
        return json_response(
            {"configured": True, "issuer": present(issuer)}, headers={"ETag": format_etag(issuer.version)}
        )

    head = get  # HEAD is answered as GET, without the body

    @docs(
        tags=["keys"],
        summary="Set the key issuer (admin): digitalocean {apiToken} or aws-iam {accessKey, secretKey, region}",
        operationId="putKeyIssuer",
        description="The secret (apiToken, secretKey) is write-only, kept by the secret backend; omitted, the "
        "stored one is kept. With the env backend this is 422: minted keys need a backend that can store them.",
        security=SECURITY,
        parameters=[IF_MATCH_PARAM, CREATE_ONLY_PARAM, IDEMPOTENCY_KEY_PARAM],
        requestBody=json_body(IssuerInputSchema, "The issuer"),
        responses={
            200: ok(IssuerEnvelopeSchema, "Replaced (or unchanged)", etag=etag_header(always=True), replayable=True),
            201: ok(IssuerEnvelopeSchema, "Created", etag=etag_header(always=True), replayable=True),
            **errors(400, 401, 403, 409, 412, 413, 415, 422, 429, 503),
        },
    )
    async def put(self) -> web.Response:
        wanted_conditions = self.request[PRECONDITIONS]
        backend = self.request.app[SECRET_BACKEND]
        body = await read_json_object(self.request)
        if not backend.writable:
            field = "apiToken" if "apiToken" in body else "secretKey"
            raise readonly_field(
                field,
                "PUT",
                f"The secret backend is '{backend.name}', which cannot store the issuer's secret or the keys it "
                "mints: run spacesvc with SPACESVC_SECRET_BACKEND=db or vault to use an issuer.",
            )
        wanted = parse_issuer(body)
        async with self.request.app[LIVE].writing(ISSUER) as write, postgres.acquire(self.request.app) as conn:
            issuer, created, _ = await store.write_issuer(
                conn, backend, wanted, wanted_conditions, request_actor(self.request)
            )
            write.changed()
        self.request.app[KEYS].wake()
        return json_response(
            {"issuer": present(issuer)}, status=201 if created else 200, headers={"ETag": format_etag(issuer.version)}
        )

    @docs(
        tags=["keys"],
        summary="Remove the key issuer; every key it minted is deleted at it (retried until done)",
        operationId="deleteKeyIssuer",
        security=SECURITY,
        parameters=[IF_MATCH_PARAM, IDEMPOTENCY_KEY_PARAM],
        responses={
            200: ok(SuccessSchema, "Deleted", replayable=True),
            **errors(400, 401, 403, 404, 409, 412, 429, 503),
        },
    )
    async def delete(self) -> web.Response:
        app = self.request.app
        async with app[LIVE].writing(ISSUER) as write, postgres.acquire(app) as conn:
            await store.delete_issuer(conn, self.request[PRECONDITIONS], request_actor(self.request))
            write.changed(SPACES.name)
        await self.request.app[KEYS].keys.delete_pending(first_try=True)
        return json_response({"success": True})


class IssuerTestView(web.View):
    URL_PATH = "/api/settings/spaces/issuer/test"

    @docs(
        tags=["keys"],
        summary="Check the issuer answers and may create keys: mints a key with no grants and deletes it",
        operationId="testKeyIssuer",
        security=SECURITY,
        parameters=[IDEMPOTENCY_KEY_PARAM],
        responses={
            200: ok(IssuerTestSchema, "The issuer minted and deleted a key", replayable=True),
            **errors(400, 401, 403, 404, 409, 429, 503),
        },
    )
    async def post(self) -> web.Response:
        keys = self.request.app[KEYS].keys
        async with postgres.acquire(self.request.app) as conn:
            issuer = await keys.issuer(conn)
        if issuer is None:
            raise no_issuer()
        await issuer.check()
        async with postgres.acquire(self.request.app) as conn:
            await ISSUER.audit(conn, ISSUER_TESTED, "", request_actor(self.request), {"type": issuer.kind})
        return json_response({"success": True, "message": "The issuer minted and deleted a key."})


class RotateView(web.View):
    URL_PATH = "/api/environments/{id}/spaces/credentials/rotate"

    @docs(
        tags=["keys"],
        summary="Rotate the environment's own key: a new one is delivered at once, the old one retires",
        operationId="rotateSpacesCredentials",
        security=SECURITY,
        parameters=[ENVIRONMENT_ID_PARAM, IDEMPOTENCY_KEY_PARAM],
        responses={
            200: ok(RotationSchema, "Rotated", replayable=True),
            **errors(400, 401, 403, 404, 409, 429, 503),
        },
    )
    async def post(self) -> web.Response:
        app = self.request.app
        async with app[LIVE].writing(SPACES) as write:
            try:
                key = await app[KEYS].keys.rotate(self.request.match_info["id"], request_actor(self.request))
            finally:
                write.changed()
        at = rotates_at(key, app[SETTINGS].key_max_age_seconds)
        body = {
            "success": True,
            "key": {
                "accessKey": key.access_key,
                "createdAt": timestamp(key.created_at),
                "rotatesAt": None if at is None else timestamp(at),
            },
        }
        return json_response(body)
