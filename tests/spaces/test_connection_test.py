"""POST /api/settings/spaces/test and GET /api/settings/spaces/buckets against a real S3-compatible
server (moto), an unreachable endpoint, and a socket that accepts and never answers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from spacesvc.s3 import endpoint_url
from spacesvc.settings import Settings
from spacesvc.spaces.connection import SCOPED_KEY
from tests.support.api import BUCKETS, SPACES, TEST, MakeClient, Tokens, assert_envelope, auth
from tests.support.postgres import free_port
from tests.support.s3 import MotoS3, StandIn
from tests.support.secrecy import assert_hidden

HANG = 20.0  # not a speed target: past this the test counts as hung


def config(s3: MotoS3, user: str = "full", buckets: list[str] | None = None, endpoint: str | None = None) -> dict:
    key = s3.keys[user]
    return {
        "accessKey": key.access_key,
        "secretKey": key.secret_key,
        "region": "us-east-1",
        "endpoint": endpoint or s3.url,
        "buckets": buckets or [],
    }


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose listener accepts connections (the kernel completes them) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


async def test_configured_buckets_that_exist_pass(client: TestClient, admin: dict, s3: MotoS3) -> None:
    await client.put(SPACES, json=config(s3, buckets=["existing-one", "existing-two"]), headers=admin)
    resp = await client.post(TEST, headers=admin)
    assert resp.status == 200
    body = await resp.json()
    assert body["success"] is True and body["scopedKey"] is True  # checked one by one, as BRIDGEPORT says
    assert body["buckets"] == ["existing-one", "existing-two"]
    assert body["failedBuckets"] == [] and body["failures"] == []
    assert body["message"] == "Connection successful"


async def test_a_missing_bucket_fails_with_its_own_reason_and_the_rest_still_connect(
    client: TestClient, admin: dict, s3: MotoS3
) -> None:
    """As BRIDGEPORT's page reads it: success when at least one configured bucket is accessible."""
    await client.put(SPACES, json=config(s3, buckets=["existing-one", "not-there-bucket"]), headers=admin)
    body = await (await client.post(TEST, headers=admin)).json()
    assert body["success"] is True and body["message"] == "Connected. Access to 1/2 buckets."
    assert body["buckets"] == ["existing-one"]
    assert body["failedBuckets"] == ["not-there-bucket"]
    assert body["failures"] == [{"bucket": "not-there-bucket", "reason": "the bucket does not exist"}]


async def test_without_configured_buckets_listbuckets_discovers_them(
    client: TestClient, tokens: Tokens, admin: dict, s3: MotoS3
) -> None:
    await client.put(SPACES, json=config(s3), headers=admin)
    operator = auth(await tokens.create("operator", ("settings:read",)))
    body = await (await client.post(TEST, headers=operator)).json()
    assert body["success"] is True and body["scopedKey"] is False
    assert body["message"] == "Connection successful (full API access)"
    assert {"existing-one", "existing-two"} <= set(body["buckets"])


async def test_a_bucket_scoped_key_without_configured_buckets_is_a_400_as_bridgeport_answers_it(
    client: TestClient, admin: dict, s3: MotoS3
) -> None:
    await client.put(SPACES, json=config(s3, user="scoped"), headers=admin)
    body = await assert_envelope(await client.post(TEST, headers=admin), 400, "VALIDATION_ERROR")
    assert body["success"] is False and body["scopedKey"] is True and "bucket" in body["hint"]
    assert body["error"] == body["message"] == SCOPED_KEY
    await client.patch(SPACES, json={"buckets": ["existing-one", "existing-two"]}, headers=admin)
    body = await (await client.post(TEST, headers=admin)).json()
    assert body["success"] is True
    assert body["buckets"] == ["existing-one"] and body["failedBuckets"] == ["existing-two"]
    assert "access denied" in body["failures"][0]["reason"]


async def test_no_accessible_bucket_is_a_400_naming_them(client: TestClient, admin: dict, s3: MotoS3) -> None:
    await client.put(
        SPACES, json=config(s3, user="scoped", buckets=["existing-two", "not-there-bucket"]), headers=admin
    )
    body = await assert_envelope(await client.post(TEST, headers=admin), 400, "VALIDATION_ERROR")
    assert body["success"] is False and body["buckets"] == []
    assert body["failedBuckets"] == ["existing-two", "not-there-bucket"]
    expected = "Cannot access any configured buckets: existing-two, not-there-bucket"
    assert body["error"] == body["message"] == expected


async def test_a_wrong_secret_fails_and_no_secret_or_signature_is_echoed(
    client: TestClient, admin: dict, s3: MotoS3
) -> None:
    wrong = {**config(s3), "secretKey": "wrong-" + s3.keys["full"].secret_key}
    await client.put(SPACES, json=wrong, headers=admin)
    resp = await client.post(TEST, headers=admin)
    text = await resp.text()
    body = await assert_envelope(resp, 400, "VALIDATION_ERROR")
    assert body["success"] is False and "secret key does not match" in body["error"]
    assert_hidden(text, s3.keys["full"].secret_key, where="the response")
    for marker in ("Signature", "AWS4-HMAC-SHA256", "Credential="):
        assert marker not in text


async def test_an_unreachable_endpoint_fails_quickly(client: TestClient, admin: dict, s3: MotoS3) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    await client.put(SPACES, json=config(s3, buckets=["existing-one"], endpoint=closed), headers=admin)
    resp = await asyncio.wait_for(client.post(TEST, headers=admin), HANG)
    body = await assert_envelope(resp, 400, "VALIDATION_ERROR")
    assert body["success"] is False
    assert body["failures"] == [{"bucket": "existing-one", "reason": body["failures"][0]["reason"]}]
    assert "cannot connect" in body["failures"][0]["reason"]


async def test_a_socket_that_never_answers_is_reported_within_the_bound(
    client: TestClient, admin: dict, s3: MotoS3, silent_port: int
) -> None:
    silent = f"http://127.0.0.1:{silent_port}"
    await client.put(SPACES, json=config(s3, buckets=["existing-one", "existing-two"], endpoint=silent), headers=admin)
    body = await (await asyncio.wait_for(client.post(TEST, headers=admin), HANG)).json()
    assert body["success"] is False and body["code"] == "VALIDATION_ERROR"
    assert body["failedBuckets"] == ["existing-one", "existing-two"]
    assert all("did not answer" in failure["reason"] for failure in body["failures"])
    await client.patch(SPACES, json={"buckets": None}, headers=admin)
    body = await (await asyncio.wait_for(client.post(TEST, headers=admin), HANG)).json()
    assert body["success"] is False and "did not answer" in body["error"]


async def test_not_configured_is_404(client: TestClient, admin: dict) -> None:
    await assert_envelope(await client.post(TEST, headers=admin), 404, "NOT_FOUND")
    await assert_envelope(await client.get(BUCKETS, headers=admin), 404, "NOT_FOUND")


async def test_a_body_tests_proposed_credentials_without_saving_them(
    client: TestClient, admin: dict, s3: MotoS3
) -> None:
    resp = await client.post(TEST, json=config(s3, buckets=["existing-two"]), headers=admin)
    body = await resp.json()
    assert resp.status == 200 and body["success"] is True and body["buckets"] == ["existing-two"]
    assert await (await client.get(SPACES, headers=admin)).json() == {"configured": False, "config": None}


async def test_a_body_without_secret_uses_the_stored_one_for_the_saved_endpoint(
    client: TestClient, admin: dict, s3: MotoS3
) -> None:
    await client.put(SPACES, json=config(s3), headers=admin)
    proposed = {k: v for k, v in config(s3, buckets=["existing-one"]).items() if k != "secretKey"}
    body = await (await client.post(TEST, json=proposed, headers=admin)).json()
    assert body["success"] is True and body["buckets"] == ["existing-one"]


async def test_the_stored_secret_is_never_sent_to_another_endpoint(client: TestClient, admin: dict, s3: MotoS3) -> None:
    """A proposed endpoint (or a region its endpoint follows) other than the saved one must bring
    its own secretKey; the listener there receives nothing, so no signature made with the stored
    secret leaves the service."""
    await client.put(SPACES, json=config(s3), headers=admin)

    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=403)

    async with StandIn(answer) as listener:
        elsewhere = {"accessKey": "AKIDSECURITYTEST", "endpoint": listener.url, "region": "ams3"}
        body = await assert_envelope(await client.post(TEST, json=elsewhere, headers=admin), 400, "VALIDATION_ERROR")
        assert body["field"] == "secretKey"
        by_region = {"accessKey": "AKIDSECURITYTEST", "region": "ams3"}  # endpoint: ams3.digitaloceanspaces.com
        body = await assert_envelope(await client.post(TEST, json=by_region, headers=admin), 400, "VALIDATION_ERROR")
        assert body["field"] == "secretKey"
        assert listener.requests == []


async def test_a_body_needs_admin_and_write_scope(client: TestClient, tokens: Tokens, s3: MotoS3) -> None:
    viewer = auth(await tokens.create("viewer", ("settings:read",)))
    reader = auth(await tokens.create("admin", ("settings:read",)))
    await assert_envelope(await client.post(TEST, json=config(s3), headers=viewer), 403, "FORBIDDEN_ROLE")
    await assert_envelope(await client.post(TEST, json=config(s3), headers=reader), 403, "FORBIDDEN_SCOPE")


async def test_buckets_lists_the_configured_ones_without_calling_the_endpoint(
    client: TestClient, admin: dict, s3: MotoS3
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    await client.put(SPACES, json=config(s3, buckets=["a-bucket", "b-bucket"], endpoint=nowhere), headers=admin)
    resp = await client.get(BUCKETS, headers=admin)
    assert await resp.json() == {"buckets": ["a-bucket", "b-bucket"], "source": "configured"}


async def test_buckets_discovers_with_listbuckets_when_none_are_configured(
    client: TestClient, viewer: dict, admin: dict, s3: MotoS3
) -> None:
    await client.put(SPACES, json=config(s3), headers=admin)
    body = await (await client.get(BUCKETS, headers=viewer)).json()
    assert body["source"] == "discovered" and {"existing-one", "existing-two"} <= set(body["buckets"])


async def test_buckets_with_a_scoped_key_says_so(client: TestClient, admin: dict, s3: MotoS3) -> None:
    await client.put(SPACES, json=config(s3, user="scoped"), headers=admin)
    body = await (await client.get(BUCKETS, headers=admin)).json()
    assert body == {"buckets": [], "source": "discovered", "scopedKey": True, "hint": body["hint"]}


async def test_buckets_from_an_unreachable_endpoint_is_503(client: TestClient, admin: dict, s3: MotoS3) -> None:
    await client.put(SPACES, json=config(s3, endpoint=f"http://127.0.0.1:{free_port()}"), headers=admin)
    resp = await client.get(BUCKETS, headers=admin)
    body = await assert_envelope(resp, 503, "SERVICE_UNAVAILABLE")
    assert "cannot connect" in body["message"] and resp.headers["Retry-After"]


async def test_the_secret_is_read_from_the_vault_backend(
    make_client: MakeClient, vault_settings: Settings, admin: dict, s3: MotoS3
) -> None:
    client = await make_client(vault_settings)
    await client.put(SPACES, json=config(s3, buckets=["existing-one"]), headers=admin)
    body = await (await client.post(TEST, headers=admin)).json()
    assert body["success"] is True


@pytest.mark.unit
@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("fra1.digitaloceanspaces.com", "https://fra1.digitaloceanspaces.com"),
        ("minio.internal:9000", "https://minio.internal:9000"),
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
        ("https://s3.eu-central-1.amazonaws.com/", "https://s3.eu-central-1.amazonaws.com"),
    ],
)
def test_a_bare_host_endpoint_means_https(endpoint: str, url: str) -> None:
    assert endpoint_url(endpoint) == url


async def test_a_viewer_may_not_run_the_connection_test_as_in_bridgeport(
    client: TestClient, viewer: dict, admin: dict, s3: MotoS3
) -> None:
    await client.put(SPACES, json=config(s3), headers=admin)
    body = await assert_envelope(await client.post(TEST, headers=viewer), 403, "FORBIDDEN_ROLE")
    assert "admin or operator" in body["message"]


async def test_a_proposed_configuration_is_tested_also_with_an_idempotency_key(
    client: TestClient, admin: dict, s3: MotoS3
) -> None:
    """The key's handling reads the body first; the test must still try the proposed credentials."""
    await client.put(SPACES, json=config(s3, buckets=["existing-one"]), headers=admin)
    wrong = {**config(s3, buckets=["existing-one"]), "secretKey": "wrong-" + s3.keys["full"].secret_key}
    headers = {**admin, "Idempotency-Key": "test-proposed-1"}
    body = await assert_envelope(await client.post(TEST, json=wrong, headers=headers), 400, "VALIDATION_ERROR")
    assert body["success"] is False and body["failedBuckets"] == ["existing-one"]
    retried = await client.post(TEST, json=wrong, headers=headers)  # a failure is not kept: tried again
    assert "Idempotent-Replayed" not in retried.headers and (await retried.json())["failedBuckets"] == ["existing-one"]


async def test_a_viewer_with_an_idempotency_key_cannot_post_a_body(
    client: TestClient, viewer: dict, admin: dict, s3: MotoS3, conn: asyncpg.Connection
) -> None:
    resp = await client.post(TEST, json=config(s3), headers={**viewer, "Idempotency-Key": "k"})
    await assert_envelope(resp, 403, "FORBIDDEN_ROLE")
    assert await conn.fetchval("SELECT count(*) FROM idempotency_keys") == 0


async def test_a_region_the_signer_would_refuse_is_a_validation_error_not_a_500(
    client: TestClient, admin: dict, s3: MotoS3
) -> None:
    for region in ("123", "0", "ams3-"):
        resp = await client.post(TEST, json={**config(s3), "region": region}, headers=admin)
        body = await assert_envelope(resp, 400, "VALIDATION_ERROR")
        assert body["field"] == "region"


async def test_a_saved_region_the_client_cannot_be_built_for_is_the_callers_400_not_an_outage(
    client: TestClient, admin: dict, s3: MotoS3, conn: asyncpg.Connection
) -> None:
    """Earlier releases accepted regions such as "123"; a configuration saved then must not
    make the test a 500 or bucket discovery a storage outage."""
    await client.put(SPACES, json=config(s3), headers=admin)
    await conn.execute("UPDATE spaces_config SET region = '123'")
    body = await assert_envelope(await client.post(TEST, headers=admin), 400, "VALIDATION_ERROR")
    assert body["field"] == "region" and "region" in body["message"]
    await assert_envelope(await client.get(BUCKETS, headers=admin), 400, "VALIDATION_ERROR")
