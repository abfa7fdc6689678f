"""``POST /api/settings/spaces/test`` and ``GET /api/settings/spaces/buckets``: the saved (or a
proposed) configuration tried against its S3-compatible endpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp_apispec import docs
from botocore.exceptions import BotoCoreError, ClientError

from backends import SecretBackend
from spacesvc import postgres
from spacesvc.errors import InvalidInput, NotFound, Unavailable
from spacesvc.http.authorization import ADMIN, ADMIN_OR_OPERATOR, ANY_ROLE, READ, WRITE, authorize, requires
from spacesvc.http.idempotency import run_idempotently
from spacesvc.http.jsonio import json_response, read_json_object
from spacesvc.http.openapi import IDEMPOTENCY_KEY_PARAM, SECURITY, errors, json_body, ok
from spacesvc.http.request_context import PRINCIPAL
from spacesvc.s3 import S3, Target, endpoint_url, is_scoped_key, reason
from spacesvc.secret_backend import SECRET_BACKEND
from spacesvc.spaces import queries
from spacesvc.spaces.model import SpacesFields, not_configured
from spacesvc.spaces.schemas import BucketListSchema, ConnectionTestSchema, SpacesConfigInput
from spacesvc.spaces.validation import parse_put


def target_for(fields: SpacesFields, secret: str) -> Target:
    return Target(fields.effective_endpoint, fields.region, fields.access_key, secret)


def _no_secret() -> InvalidInput:
    return InvalidInput(
        "No secretKey is stored, so the credentials cannot be tried.",
        field="secretKey",
        hint="Set secretKey with PUT or PATCH (for the env backend: SPACESVC_SPACES_SECRET_KEY).",
    )


async def _load_saved(
    request: web.Request, *, secret_needed: Callable[[SpacesFields], bool]
) -> tuple[SpacesFields, str | None]:
    """The saved fields and, when ``secret_needed`` says so, the secret from whichever backend
    holds it, over one connection; 404 when nothing is configured."""
    app = request.app
    backend: SecretBackend = app[SECRET_BACKEND]
    async with postgres.acquire(app) as conn:
        config = await queries.get_config(conn)
        if config is None:
            raise not_configured()
        secret = await queries.stored_secret(conn, backend, config) if secret_needed(config.fields) else None
    return config.fields, secret


def _always(fields: SpacesFields) -> bool:
    return True


class SpacesTestView(web.View):
    URL_PATH = "/api/settings/spaces/test"

    @docs(
        tags=["settings"],
        summary="Test the saved credentials (or proposed ones) against the endpoint",
        operationId="testSpacesConnection",
        description="HeadBucket on each configured bucket, or ListBuckets when none are configured; "
        "an AccessDenied on ListBuckets means a bucket-scoped key (scopedKey). Without a body: role "
        "admin or operator (as BRIDGEPORT) with settings:read tests the saved configuration. With a "
        "body (the fields of PUT; secretKey may be omitted to use the stored one): role admin and "
        "settings:write, since the caller chooses the endpoint. Answers within about 10 s.",
        security=SECURITY,
        parameters=[IDEMPOTENCY_KEY_PARAM],
        requestBody={
            **json_body(SpacesConfigInput, "Optional: credentials to try before saving them"),
            "required": False,
        },
        responses={
            200: ok(ConnectionTestSchema, "The test ran"),
            **errors(400, 401, 403, 404, 408, 409, 413, 415, 422, 429, 503),
        },
    )
    async def post(self) -> web.StreamResponse:
        request = self.request
        if request.body_exists:
            authorize(request[PRINCIPAL], ADMIN, WRITE)
        else:
            authorize(request[PRINCIPAL], ADMIN_OR_OPERATOR, READ)
        return await run_idempotently(request, self._test)

    async def _test(self) -> web.Response:
        request = self.request
        if request.body_exists:
            proposed = parse_put(await read_json_object(request))
            tested, secret = proposed.fields, proposed.secret or await _stored_secret_if_any(request)
        else:
            tested, secret = await _load_saved(request, secret_needed=_always)
        if secret is None:
            raise _no_secret()
        report = await request.app[S3].test(target_for(tested, secret), list(tested.buckets))
        return json_response(report.body())


async def _stored_secret_if_any(request: web.Request) -> str | None:
    try:
        return (await _load_saved(request, secret_needed=_always))[1]
    except NotFound:
        return None


class SpacesBucketsView(web.View):
    URL_PATH = "/api/settings/spaces/buckets"

    @docs(
        tags=["settings"],
        summary="The buckets: the configured ones, or those the key can list",
        operationId="listSpacesBuckets",
        security=SECURITY,
        responses={200: ok(BucketListSchema, "The buckets"), **errors(400, 401, 403, 404, 429, 503)},
    )
    @requires(roles=ANY_ROLE, scope=READ)
    async def get(self) -> web.Response:
        return json_response(await bucket_list(self.request))

    head = get  # HEAD is answered as GET, without the body


async def bucket_list(request: web.Request) -> dict[str, Any]:
    """The configured buckets, or (none configured) those the key can list: the body of GET
    /api/settings/spaces/buckets and of an environment's buckets."""
    # the secret is read only when the buckets must be discovered
    saved_fields, secret = await _load_saved(request, secret_needed=lambda fields: not fields.buckets)
    if saved_fields.buckets:
        return {"buckets": list(saved_fields.buckets), "source": "configured"}
    if secret is None:
        raise _no_secret()
    target = target_for(saved_fields, secret)
    try:
        found = await request.app[S3].list_buckets(target)
    except ClientError as error:
        if is_scoped_key(error):
            return {
                "buckets": [],
                "source": "discovered",
                "scopedKey": True,
                "hint": "The key may not list buckets; add the bucket names to the configuration.",
            }
        raise _storage_unavailable(target, error) from None
    except (TimeoutError, BotoCoreError) as error:
        raise _storage_unavailable(target, error) from None
    return {"buckets": found, "source": "discovered"}


def _storage_unavailable(target: Target, error: BaseException) -> Unavailable:
    return Unavailable(
        "storage",
        f"Could not list buckets at {endpoint_url(target.endpoint)}: {reason(error)}.",
        hint="POST /api/settings/spaces/test checks the endpoint and credentials in detail.",
    )
