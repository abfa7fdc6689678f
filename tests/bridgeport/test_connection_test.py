"""BRIDGEPORT's connection test as its pages read it: a success is 200 with its message; a
failure is a 400 whose message (the one api.ts throws with) is BRIDGEPORT's own words; an
environment's test and buckets may be called by a token bound to that environment."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from spacesvc.spaces.connection import SCOPED_KEY
from tests.support.api import SPACES, Tokens, assert_envelope, auth, create_environment, enable
from tests.support.bridgeport import ApiRequestError, BridgeportClient
from tests.support.postgres import free_port
from tests.support.s3 import MotoS3


def page(client: TestClient, token: str) -> BridgeportClient:
    return BridgeportClient(str(client.make_url("")).rstrip("/"), token)


def saved(s3: MotoS3, user: str = "full", buckets: list[str] | None = None, endpoint: str | None = None) -> dict:
    key = s3.keys[user]
    return {
        "accessKey": key.access_key,
        "secretKey": key.secret_key,
        "region": "us-east-1",
        "endpoint": endpoint or s3.url,
        "buckets": buckets or [],
    }


async def failed_test(ui: BridgeportClient) -> ApiRequestError:
    try:
        await ui.testGlobalSpacesConfig()
    except ApiRequestError as error:
        return error
    raise AssertionError("the connection test succeeded")


async def test_the_page_reads_each_outcome_of_the_test_in_bridgeports_words(
    client: TestClient, tokens: Tokens, admin: dict, s3: MotoS3
) -> None:
    ui = page(client, await tokens.create("operator", ("settings:read",), name="bridgeport-operator"))

    await client.put(SPACES, json=saved(s3, buckets=["existing-one", "existing-two"]), headers=admin)
    result = await ui.testGlobalSpacesConfig()
    assert (result["success"], result["message"], result["scopedKey"]) == (True, "Connection successful", True)

    await client.put(SPACES, json=saved(s3), headers=admin)
    result = await ui.testGlobalSpacesConfig()
    assert (result["success"], result["scopedKey"]) == (True, False)
    assert result["message"] == "Connection successful (full API access)"

    await client.put(SPACES, json=saved(s3, user="scoped"), headers=admin)
    error = await failed_test(ui)
    assert (error.status, error.message) == (400, SCOPED_KEY)

    await client.put(SPACES, json=saved(s3, user="scoped", buckets=["existing-two", "gone-bucket"]), headers=admin)
    error = await failed_test(ui)
    assert (error.status, error.message) == (400, "Cannot access any configured buckets: existing-two, gone-bucket")

    await client.put(SPACES, json=saved(s3, endpoint=f"http://127.0.0.1:{free_port()}"), headers=admin)
    error = await failed_test(ui)
    assert error.status == 400 and "cannot connect" in error.message


async def test_a_failed_test_carries_bridgeports_fields_and_the_error_envelope(
    client: TestClient, admin: dict, s3: MotoS3
) -> None:
    await client.put(SPACES, json=saved(s3, user="scoped"), headers=admin)
    body = await assert_envelope(await client.post("/api/settings/spaces/test", headers=admin), 400, "VALIDATION_ERROR")
    assert body["success"] is False and body["scopedKey"] is True
    assert body["error"] == body["message"] == SCOPED_KEY


async def test_an_environment_is_tested_by_its_page_and_by_a_token_bound_to_it(
    client: TestClient, tokens: Tokens, admin: dict, viewer: dict, s3: MotoS3
) -> None:
    prod = await create_environment(client, admin, "production")
    staging = await create_environment(client, admin, "staging")
    await client.put(SPACES, json=saved(s3, buckets=["existing-one"]), headers=admin)
    await enable(client, admin, prod)
    operator = page(client, await tokens.create("operator", ("settings:read",), name="bridgeport-operator"))
    result = await operator.testSpacesConnection(prod)
    assert (result["success"], result["buckets"]) == (True, ["existing-one"])
    try:
        await operator.testSpacesConnection(staging)
        raise AssertionError("an environment Spaces is not enabled for was tested")
    except ApiRequestError as error:
        assert error.status == 404

    workload = await tokens.create("viewer", ("spaces:credentials",), name="prod-workload", environment="production")
    bound = page(client, workload)
    assert (await bound.testSpacesConnection(prod))["success"] is True
    assert (await bound.listSpacesBuckets(prod))["buckets"] == ["existing-one"]
    await enable(client, admin, staging)
    for call in (bound.testSpacesConnection, bound.listSpacesBuckets):
        try:
            await call(staging)
            raise AssertionError("a token bound to production acted on staging")
        except ApiRequestError as error:
            assert (error.status, error.code) == (403, "FORBIDDEN_SCOPE")
    resp = await client.post(f"/api/environments/{prod}/spaces/test", headers=viewer)
    await assert_envelope(resp, 403, "FORBIDDEN_ROLE")
    resp = await client.post(f"/api/environments/{prod}/spaces/test", headers=auth(workload))
    assert resp.status == 200
