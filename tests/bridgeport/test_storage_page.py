"""BRIDGEPORT's Storage page (ui/src/pages/admin/Storage.tsx) against spacesvc, call by call in the
order the page makes them, through a client that requests exactly as BRIDGEPORT's api.ts does."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient

from tests.support.api import Tokens, create_environment
from tests.support.bridgeport import ApiRequestError, BridgeportClient
from tests.support.s3 import MotoS3
from tests.support.secrecy import assert_hidden


def page(client: TestClient, token: str) -> BridgeportClient:
    return BridgeportClient(str(client.make_url("")).rstrip("/"), token)


async def load_data(ui: BridgeportClient) -> tuple[bool, dict | None, list[dict]]:
    """Storage.tsx loadData(): the configuration and the environments, in parallel."""
    config_res, envs_res = await asyncio.gather(ui.getGlobalSpacesConfig(), ui.getSpacesEnvironments())
    return config_res["configured"], config_res["config"], envs_res["environments"]


async def test_the_storage_page_loads_saves_toggles_tests_and_removes(
    client: TestClient, tokens: Tokens, s3: MotoS3, admin: dict
) -> None:
    ui = page(client, await tokens.create("admin", name="bridgeport-admin"))
    prod = await create_environment(client, admin, "production")
    staging = await create_environment(client, admin, "staging")

    configured, config, environments = await load_data(ui)
    assert (configured, config) == (False, None)
    assert [(e["name"], e["spacesEnabled"]) for e in environments] == [("production", False), ("staging", False)]

    key = s3.keys["full"]
    # onSubmit(): the form's values; endpoint is not sent, buckets only when there are some
    saved = await ui.updateGlobalSpacesConfig(
        {"accessKey": key.access_key, "secretKey": key.secret_key, "region": "US-EAST-1", "buckets": ["existing-one"]}
    )
    assert saved["config"]["accessKey"] == key.access_key
    configured, config, environments = await load_data(ui)
    assert configured is True and config is not None
    assert config["region"] == "us-east-1" and config["buckets"] == ["existing-one"]
    assert config["enabledEnvironments"] == []
    # the page shows the endpoint it was given: point it at the S3 server the test runs
    await ui.updateGlobalSpacesConfig(
        {"accessKey": key.access_key, "region": "us-east-1", "buckets": ["existing-one", "missing-bucket"]}
    )
    await client.patch("/api/settings/spaces", json={"endpoint": s3.url}, headers=admin)

    # handleToggleEnvironment()
    assert await ui.setSpacesEnvironmentEnabled(prod, True) == {"success": True, "enabled": True}
    _, config, environments = await load_data(ui)
    assert [(e["name"], e["spacesEnabled"]) for e in environments] == [("production", True), ("staging", False)]
    assert config is not None and [(e["environmentId"], e["enabled"]) for e in config["enabledEnvironments"]] == [
        (prod, True)
    ]

    # handleTest(): lists accessible and inaccessible buckets only on success
    result = await ui.testGlobalSpacesConfig()
    assert result["success"] is True and result["message"] == "Connected. Access to 1/2 buckets."
    assert result["buckets"] == ["existing-one"] and result["failedBuckets"] == ["missing-bucket"]
    assert_hidden(str(result), key.secret_key, where="the test's answer")

    # the environment's buckets (BRIDGEPORT's listSpacesBuckets), only while it is enabled
    assert (await ui.listSpacesBuckets(prod))["buckets"] == ["existing-one", "missing-bucket"]
    try:
        await ui.listSpacesBuckets(staging)
        raise AssertionError("a disabled environment's buckets were listed")
    except ApiRequestError as error:
        assert error.status == 404 and error.message

    # handleDelete()
    assert await ui.deleteGlobalSpacesConfig() == {"success": True}
    configured, config, environments = await load_data(ui)
    assert (configured, config) == (False, None)
    assert [e["spacesEnabled"] for e in environments] == [False, False]


async def test_the_page_shows_spacesvc_errors_as_its_own(client: TestClient, tokens: Tokens) -> None:
    """api.ts throws with the body's message; a viewer's test is refused as BRIDGEPORT refuses it."""
    viewer = page(client, await tokens.create("viewer", ("settings:read",), name="bridgeport-viewer"))
    try:
        await viewer.testGlobalSpacesConfig()
        raise AssertionError("a viewer ran the connection test")
    except ApiRequestError as error:
        assert (error.status, error.code) == (403, "FORBIDDEN_ROLE") and error.message
    admin = page(client, await tokens.create("admin", name="bridgeport-admin"))
    try:
        await admin.updateGlobalSpacesConfig({"accessKey": "AK", "region": "fra1"})
        raise AssertionError("a first save without a secret was accepted")
    except ApiRequestError as error:
        assert error.status == 400 and "secretKey" in error.message
