"""One JSON envelope for every non-2xx answer, and X-Request-ID on every response."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.test_utils import TestClient

from backends import BackendUnavailable
from spacesvc.errors import Conflict, DomainError, InvalidInput, NotFound, PreconditionFailed, Unavailable
from spacesvc.http.pipeline import OPEN, add_route
from spacesvc.settings import Settings
from tests.support.api import BODY, REQUEST_ID, SPACES, MakeClient, assert_envelope
from tests.support.logs import ServerLog


async def test_unknown_route_is_404_in_the_envelope(client: TestClient) -> None:
    await assert_envelope(await client.get("/api/nothing-here"), 404, "NOT_FOUND")


async def test_wrong_method_is_405_with_allow(client: TestClient, admin: dict) -> None:
    resp = await client.post(SPACES, headers=admin)
    await assert_envelope(resp, 405, "VALIDATION_ERROR")
    assert set(resp.headers["Allow"].split(",")) >= {"GET", "PUT", "PATCH", "DELETE"}
    resp = await client.post("/healthz")
    await assert_envelope(resp, 405, "VALIDATION_ERROR")
    assert "GET" in resp.headers["Allow"]


async def test_body_over_64_kib_is_413(client: TestClient, admin: dict) -> None:
    body = json.dumps({**BODY, "accessKey": "A" * (65 * 1024)})
    resp = await client.put(SPACES, data=body, headers={**admin, "Content-Type": "application/json"})
    await assert_envelope(resp, 413, "VALIDATION_ERROR")


async def test_non_json_content_type_is_415(client: TestClient, admin: dict) -> None:
    resp = await client.put(
        SPACES, data="accessKey=x", headers={**admin, "Content-Type": "application/x-www-form-urlencoded"}
    )
    await assert_envelope(resp, 415, "VALIDATION_ERROR")


async def test_malformed_json_is_400(client: TestClient, admin: dict) -> None:
    resp = await client.put(SPACES, data='{"accessKey": "x",', headers={**admin, "Content-Type": "application/json"})
    body = await assert_envelope(resp, 400, "VALIDATION_ERROR")
    assert "not valid JSON" in body["message"]


async def test_json_that_is_not_an_object_is_400(client: TestClient, admin: dict) -> None:
    for payload in ("[1, 2]", '"text"', "null", "42"):
        resp = await client.put(SPACES, data=payload, headers={**admin, "Content-Type": "application/json"})
        body = await assert_envelope(resp, 400, "VALIDATION_ERROR")
        assert "JSON object" in body["message"]


async def test_empty_body_is_400(client: TestClient, admin: dict) -> None:
    resp = await client.put(SPACES, data="", headers={**admin, "Content-Type": "application/json"})
    await assert_envelope(resp, 400, "VALIDATION_ERROR")


async def test_unexpected_exception_is_500_internal_without_details(
    make_client: MakeClient, settings: Settings, server_log: ServerLog
) -> None:
    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("internal detail: /srv/secret/path line 42")

    client = await make_client(settings, lambda app: add_route(app, "GET", "/boom", boom, OPEN))
    resp = await client.get("/boom")
    body = await assert_envelope(resp, 500, "INTERNAL")
    assert "internal detail" not in await resp.text()
    assert "Traceback" not in await resp.text()
    logged = [json.loads(line) for line in server_log.lines if "exception" in json.loads(line)]
    assert logged and logged[0]["requestId"] == body["requestId"]
    assert "internal detail" in logged[0]["exception"]


async def test_every_success_response_has_a_request_id(client: TestClient, admin: dict) -> None:
    for resp in (
        await client.get("/healthz"),
        await client.get("/readyz"),
        await client.get(SPACES, headers=admin),
        await client.put(SPACES, json=BODY, headers=admin),
        await client.get("/api/docs/openapi.json"),
    ):
        assert resp.status < 300
        assert REQUEST_ID.match(resp.headers["X-Request-ID"])


async def test_request_ids_are_unique(client: TestClient) -> None:
    ids = {(await client.get("/healthz")).headers["X-Request-ID"] for _ in range(20)}
    assert len(ids) == 20


def ulid_moment(request_id: str) -> float:
    """The time a ULID names (its first 10 Crockford characters: milliseconds since the epoch)."""
    milliseconds = 0
    for character in request_id.removeprefix("req_")[:10]:
        milliseconds = milliseconds * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(character)
    return milliseconds / 1000


async def test_request_ids_are_ulids_of_the_moment_they_were_given(client: TestClient) -> None:
    before = time.time()
    ids = [(await client.get("/healthz")).headers["X-Request-ID"] for _ in range(50)]
    after = time.time()
    assert all(before - 0.001 <= ulid_moment(request_id) <= after + 0.001 for request_id in ids)
    assert [ulid_moment(request_id) for request_id in ids] == sorted(ulid_moment(request_id) for request_id in ids)
    assert len({request_id[14:] for request_id in ids}) == 50  # 80 random bits each


DOMAIN_ERRORS: list[tuple[DomainError, int, str]] = [
    (NotFound("Nothing here.", hint="Create it first."), 404, "NOT_FOUND"),
    (InvalidInput("Bad input.", field="name", details={"name": ["Too long."]}), 400, "VALIDATION_ERROR"),
    (Conflict("The name is taken."), 409, "CONFLICT"),
    (PreconditionFailed("If-Match expected version 3."), 412, "CONFLICT"),
    (Unavailable("storage", "The endpoint is not reachable."), 503, "SERVICE_UNAVAILABLE"),
    (BackendUnavailable("Vault is sealed", hint="Unseal it."), 503, "SERVICE_UNAVAILABLE"),
]


async def test_domain_errors_from_the_data_layer_become_the_envelope(
    make_client: MakeClient, settings: Settings
) -> None:
    def raising(error: DomainError) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            raise error

        return handler

    def routes(app: web.Application) -> None:
        for index, (error, _, _) in enumerate(DOMAIN_ERRORS):
            add_route(app, "GET", f"/fails/{index}", raising(error), OPEN)

    client = await make_client(settings, routes)
    for index, (error, status, code) in enumerate(DOMAIN_ERRORS):
        resp = await client.get(f"/fails/{index}")
        body = await assert_envelope(resp, status, code)
        assert body["message"] == error.message
        assert body.get("field") == error.field
        if error.details:
            assert body["errors"] == error.details
        if isinstance(error, Unavailable):
            assert body["dependency"] == error.dependency and int(resp.headers["Retry-After"]) > 0
            assert body["hint"] == (error.hint or "Retry in a few seconds; GET /readyz names the failing dependency.")
        else:
            assert body.get("hint") == error.hint and "Retry-After" not in resp.headers


async def test_the_body_limit_in_the_413_is_the_configured_one(
    make_client: MakeClient, settings: Settings, admin: dict
) -> None:
    client = await make_client(settings.with_changes(max_body_bytes=2048))
    body = json.dumps({**BODY, "accessKey": "A" * 3000})
    resp = await client.put(SPACES, data=body, headers={**admin, "Content-Type": "application/json"})
    error = await assert_envelope(resp, 413, "VALIDATION_ERROR")
    assert "at most 2 KiB" in error["message"] and "2048 bytes" in error["hint"]
