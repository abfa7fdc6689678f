"""``POST /api/settings/spaces/test`` and ``GET /api/settings/spaces/buckets``: the saved (or a
proposed) configuration tried against its S3-compatible endpoint.

The stored secret is only ever sent to the stored endpoint: a proposed configuration that names
another endpoint (or a region its endpoint follows) brings its own secretKey. Every test and every
bucket discovery is an audit entry (actor, endpoint, outcome; never the secret).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp_apispec import docs

from backends import SecretBackend
from spacesvc import postgres
from spacesvc.audit import queries as audit
from spacesvc.audit.model import Action, Resource
from spacesvc.errors import InvalidInput, NotFound, Unavailable
from spacesvc.http.authentication import request_actor
from spacesvc.http.errors import ApiError, ErrorCode
from spacesvc.http.jsonio import json_response, read_json_object
from spacesvc.http.openapi import IDEMPOTENCY_KEY_PARAM, JSON, SECURITY, errors, json_body, ok
from spacesvc.s3 import DEADLINE, S3, OutboundFailure, Target, endpoint_url, is_scoped_key
from spacesvc.secret_backend import SECRET_BACKEND
from spacesvc.spaces import queries, service
from spacesvc.spaces.model import SpacesConfig, SpacesFields, not_configured
from spacesvc.spaces.schemas import (
    BucketListSchema,
    ConnectionTestFailureSchema,
    ConnectionTestSchema,
    SpacesConfigInput,
)
from spacesvc.spaces.validation import parse_put

SCOPED_KEY = "This appears to be a bucket-scoped key. Please add the bucket names manually."


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
) -> tuple[SpacesConfig, str | None]:
    """The saved configuration and, when ``secret_needed`` says so, the secret from whichever
    backend holds it, over one connection; 404 when nothing is configured."""
    app = request.app
    backend: SecretBackend = app[SECRET_BACKEND]
    async with postgres.acquire(app) as conn:
        config = await queries.get_config(conn)
        if config is None:
            raise not_configured()
        secret = await service.stored_secret(conn, backend, config) if secret_needed(config.fields) else None
    return config, secret


def _always(fields: SpacesFields) -> bool:
    return True


# -- the connection test -------------------------------------------------------------------------


async def connection_test(request: web.Request, target: Target, buckets: list[str]) -> tuple[bool, dict[str, Any]]:
    """HeadBucket on each configured bucket, or ListBuckets when none are configured: whether it
    succeeded, and the body BRIDGEPORT's page reads (its ``message`` or, failed, its ``error``)."""
    s3 = request.app[S3]
    where = s3.check_target(target)
    if buckets:
        failures = await s3.head_buckets(target, buckets)
        reachable = [bucket for bucket in buckets if bucket not in failures]
        body: dict[str, Any] = {
            "buckets": reachable,
            "failedBuckets": sorted(failures),
            "failures": [{"bucket": name, "reason": reason} for name, reason in sorted(failures.items())],
            "scopedKey": True,
        }
        if not reachable:
            return False, {
                **body,
                "error": f"Cannot access any configured buckets: {', '.join(buckets)}",
                "hint": "Each entry of failures says why; check the bucket names, the region and the key's grants.",
            }
        # as BRIDGEPORT: the credentials work when at least one configured bucket is accessible
        if not failures:
            return True, {**body, "message": "Connection successful"}
        return True, {
            **body,
            "message": f"Connected. Access to {len(reachable)}/{len(buckets)} buckets.",
            "hint": "Each entry of failures says why a bucket failed.",
        }
    empty: dict[str, Any] = {"buckets": [], "failedBuckets": [], "failures": []}
    try:
        found = await s3.list_buckets(target)
    except OutboundFailure as error:
        if is_scoped_key(error):
            return False, {
                **empty,
                "scopedKey": True,
                "error": SCOPED_KEY,
                "hint": "Add the bucket names to the configuration (buckets) to test access to each of them.",
            }
        return False, {**empty, "scopedKey": False, "error": f"Could not connect to {where}: {error.reason}."}
    return True, {**empty, "buckets": found, "scopedKey": False, "message": "Connection successful (full API access)"}


async def answer_test(
    request: web.Request,
    target: Target,
    buckets: list[str],
    *,
    config_id: str | None,
    environment_id: str | None = None,
) -> web.Response:
    """Run the test, record it, and answer: 200 on success, else 400 with the envelope's fields."""

    async def record(outcome: str, result: str) -> None:
        details: dict[str, Any] = {
            "endpoint": endpoint_url(target.endpoint),
            "outcome": outcome,
            "result": result,
            "saved": config_id is not None,
        }
        if environment_id is not None:
            details["environment"] = environment_id
        async with postgres.acquire(request.app) as conn:
            await audit.record(
                conn, Action.CONNECTION_TESTED, Resource.SPACES_CONFIG, config_id, request_actor(request), details
            )

    try:
        success, body = await connection_test(request, target, buckets)
    except InvalidInput as refused:  # an endpoint the service never reaches, or a region it cannot sign for
        await record("refused", refused.message)
        raise
    await record("success" if success else "failure", body["message"] if success else body["error"])
    if success:
        return json_response({"success": True, **body})
    error = body.pop("error")
    raise ApiError(
        ErrorCode.VALIDATION_ERROR,
        error,
        hint=body.pop("hint", None) or "Check the endpoint, the region and the credentials.",
        extra={"success": False, "error": error, **body},
    )


TEST_RESPONSES = {
    200: ok(ConnectionTestSchema, "The credentials work (on at least one configured bucket)"),
    **errors(400, 401, 403, 404, 408, 409, 413, 415, 422, 429, 503),
}
TEST_RESPONSES[400] = {
    **TEST_RESPONSES[400],
    "description": "The test failed (success false; error and message say why), or the input is not valid "
    "(VALIDATION_ERROR).",
    "content": {JSON: {"schema": ConnectionTestFailureSchema}},
}


class SpacesTestView(web.View):
    URL_PATH = "/api/settings/spaces/test"

    @docs(
        tags=["settings"],
        summary="Test the saved credentials (or proposed ones) against the endpoint",
        operationId="testSpacesConnection",
        description="HeadBucket on each configured bucket, or ListBuckets when none are configured. A failed "
        "test is 400 with success false and error (as BRIDGEPORT's page reads it). Without a body: role admin "
        "or operator (as BRIDGEPORT) with settings:read tests the saved configuration. With a body (the fields "
        "of PUT): role admin and settings:write, since the caller chooses the endpoint; secretKey may be "
        "omitted only when the endpoint is the saved one (the stored secret goes nowhere else). Answers "
        f"within about {DEADLINE:g} s.",
        security=SECURITY,
        parameters=[IDEMPOTENCY_KEY_PARAM],
        requestBody={
            **json_body(SpacesConfigInput, "Optional: credentials to try before saving them"),
            "required": False,
        },
        responses=TEST_RESPONSES,
    )
    async def post(self) -> web.StreamResponse:
        return await self._test()

    async def _test(self) -> web.Response:
        request = self.request
        config_id: str | None = None
        if request.body_exists:
            proposed = parse_put(await read_json_object(request))
            tested, secret = proposed.fields, proposed.secret
            if secret is None:
                secret = await _stored_secret_for(request, tested)
        else:
            config, secret = await _load_saved(request, secret_needed=_always)
            tested, config_id = config.fields, config.id
        if secret is None:
            raise _no_secret()
        return await answer_test(request, target_for(tested, secret), list(tested.buckets), config_id=config_id)


async def _stored_secret_for(request: web.Request, proposed: SpacesFields) -> str | None:
    """The stored secret, for a proposed configuration that names the stored endpoint; one that
    names another endpoint must bring its own secretKey (nothing is sent)."""
    try:
        config, secret = await _load_saved(request, secret_needed=lambda saved: True)
    except NotFound:
        return None
    if endpoint_url(config.fields.effective_endpoint) != endpoint_url(proposed.effective_endpoint):
        raise InvalidInput(
            "secretKey is required when the endpoint differs from the saved one: the stored secret is sent "
            "only to the saved endpoint.",
            field="secretKey",
            hint="Send the secretKey for this endpoint, or test with the saved endpoint (and region).",
        )
    return secret


# -- the buckets ---------------------------------------------------------------------------------


class SpacesBucketsView(web.View):
    URL_PATH = "/api/settings/spaces/buckets"

    @docs(
        tags=["settings"],
        summary="The buckets: the configured ones, or those the key can list",
        operationId="listSpacesBuckets",
        description=f"A discovered listing is kept for 10 s per configuration version; discovery answers within "
        f"about {DEADLINE:g} s.",
        security=SECURITY,
        responses={200: ok(BucketListSchema, "The buckets"), **errors(400, 401, 403, 404, 429, 503)},
    )
    async def get(self) -> web.Response:
        return json_response(await bucket_list(self.request))

    head = get  # HEAD is answered as GET, without the body


async def bucket_list(request: web.Request) -> dict[str, Any]:
    """The configured buckets, or (none configured) those the key can list: the body of GET
    /api/settings/spaces/buckets and of an environment's buckets."""
    # the secret is read only when the buckets must be discovered
    config, secret = await _load_saved(request, secret_needed=lambda fields: not fields.buckets)
    if config.fields.buckets:
        return {"buckets": list(config.fields.buckets), "source": "configured"}
    s3 = request.app[S3]
    kept = s3.listings.get((config.id, config.version))
    if kept is not None:
        return kept
    if secret is None:
        raise _no_secret()
    target = target_for(config.fields, secret)
    body: dict[str, Any]
    try:
        body = {"buckets": await s3.list_buckets(target), "source": "discovered"}
        result = f"{len(body['buckets'])} bucket(s) listed"
    except OutboundFailure as error:
        if not is_scoped_key(error):
            await _record_discovery(request, config, target, False, error.reason)
            raise _storage_unavailable(target, error) from None
        body = {
            "buckets": [],
            "source": "discovered",
            "scopedKey": True,
            "hint": "The key may not list buckets; add the bucket names to the configuration.",
        }
        result = "a bucket-scoped key: listing denied"
    await _record_discovery(request, config, target, True, result)
    s3.listings.keep((config.id, config.version), body)
    return body


async def _record_discovery(
    request: web.Request, config: SpacesConfig, target: Target, success: bool, result: str
) -> None:
    details = {
        "endpoint": endpoint_url(target.endpoint),
        "outcome": "success" if success else "failure",
        "result": result,
        "version": config.version,
    }
    async with postgres.acquire(request.app) as conn:
        await audit.record(
            conn, Action.BUCKETS_DISCOVERED, Resource.SPACES_CONFIG, config.id, request_actor(request), details
        )


def _storage_unavailable(target: Target, error: OutboundFailure) -> Unavailable:
    return Unavailable(
        "storage",
        f"Could not list buckets at {endpoint_url(target.endpoint)}: {error.reason}.",
        hint="POST /api/settings/spaces/test checks the endpoint and credentials in detail.",
    )
