"""BRIDGEPORT's enablement (docs/api.md): /api/settings/spaces/environments, config.enabledEnvironments,
and an environment's buckets."""

from __future__ import annotations

import asyncio

import asyncpg
from aiohttp.test_utils import TestClient

from tests.support.api import (
    BODY,
    ENVIRONMENTS,
    SPACES,
    SPACES_ENVIRONMENTS,
    assert_envelope,
    create_environment,
    enable,
)


async def test_every_environment_is_listed_with_spaces_disabled_before_anything_is_configured(
    client: TestClient, admin: dict, viewer: dict
) -> None:
    assert await (await client.get(SPACES_ENVIRONMENTS, headers=viewer)).json() == {"environments": []}
    prod = await create_environment(client, admin, "prod")
    dev = await create_environment(client, admin, "dev")
    body = await (await client.get(SPACES_ENVIRONMENTS, headers=viewer)).json()
    assert body == {
        "environments": [
            {"id": dev, "name": "dev", "spacesEnabled": False, "buckets": [], "permission": "readwrite", "key": None},
            {"id": prod, "name": "prod", "spacesEnabled": False, "buckets": [], "permission": "readwrite", "key": None},
        ]
    }


async def test_enabling_needs_a_configuration_and_a_known_environment(client: TestClient, admin: dict) -> None:
    prod = await create_environment(client, admin, "prod")
    resp = await client.put(f"{SPACES_ENVIRONMENTS}/{prod}", json={"enabled": True}, headers=admin)
    assert "not set" in (await assert_envelope(resp, 404, "NOT_FOUND"))["message"]
    await client.put(SPACES, json=BODY, headers=admin)
    resp = await client.put(f"{SPACES_ENVIRONMENTS}/no-such-id", json={"enabled": True}, headers=admin)
    await assert_envelope(resp, 404, "NOT_FOUND")
    for bad in ({}, {"enabled": "true"}, {"enabled": 1}, {"enabled": True, "x": 1}):
        resp = await client.put(f"{SPACES_ENVIRONMENTS}/{prod}", json=bad, headers=admin)
        await assert_envelope(resp, 400, "VALIDATION_ERROR")


async def test_enablement_shows_in_both_lists_survives_a_put_and_goes_with_a_delete(
    client: TestClient, admin: dict, viewer: dict
) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    prod = await create_environment(client, admin, "prod")
    dev = await create_environment(client, admin, "dev")
    resp = await client.put(f"{SPACES_ENVIRONMENTS}/{prod}", json={"enabled": True}, headers=admin)
    assert await resp.json() == {"success": True, "enabled": True}
    await enable(client, admin, dev, False)
    listed = {
        e["name"]: e["spacesEnabled"]
        for e in (await (await client.get(SPACES_ENVIRONMENTS, headers=viewer)).json())["environments"]
    }
    assert listed == {"prod": True, "dev": False}
    config = (await (await client.get(SPACES, headers=viewer)).json())["config"]
    assert {(e["environmentId"], e["enabled"]) for e in config["enabledEnvironments"]} == {(prod, True), (dev, False)}
    assert all(set(e) == {"id", "environmentId", "enabled"} for e in config["enabledEnvironments"])

    replaced = (await (await client.put(SPACES, json={**BODY, "region": "nyc3"}, headers=admin)).json())["config"]
    assert {(e["environmentId"], e["enabled"]) for e in replaced["enabledEnvironments"]} == {(prod, True), (dev, False)}

    await client.delete(SPACES, headers=admin)
    listed = {
        e["name"]: e["spacesEnabled"]
        for e in (await (await client.get(SPACES_ENVIRONMENTS, headers=viewer)).json())["environments"]
    }
    assert listed == {"prod": False, "dev": False}
    await client.put(SPACES, json=BODY, headers=admin)
    config = (await (await client.get(SPACES, headers=viewer)).json())["config"]
    assert config["enabledEnvironments"] == []


async def test_enabled_environments_is_read_only(client: TestClient, admin: dict) -> None:
    resp = await client.put(SPACES, json={**BODY, "enabledEnvironments": []}, headers=admin)
    assert (await assert_envelope(resp, 422, "READONLY_FIELD"))["field"] == "enabledEnvironments"


async def test_an_environments_buckets_answer_only_while_spaces_is_enabled_for_it(
    client: TestClient, admin: dict, viewer: dict
) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    prod = await create_environment(client, admin, "prod")
    path = f"{ENVIRONMENTS}/{prod}/spaces/buckets"
    await assert_envelope(await client.get(path, headers=viewer), 404, "NOT_FOUND")
    await enable(client, admin, prod)
    body = await (await client.get(path, headers=viewer)).json()
    assert body["buckets"] == BODY["buckets"]
    await enable(client, admin, prod, False)
    await assert_envelope(await client.get(path, headers=viewer), 404, "NOT_FOUND")
    await assert_envelope(await client.get(f"{ENVIRONMENTS}/nope/spaces/buckets", headers=viewer), 404, "NOT_FOUND")


async def test_enabling_is_a_new_version_that_conditional_reads_and_watches_see(
    client: TestClient, admin: dict, viewer: dict
) -> None:
    created = await client.put(SPACES, json=BODY, headers=admin)
    prod = await create_environment(client, admin, "prod")
    watch = client.get(SPACES, headers={**viewer, "If-None-Match": created.headers["ETag"], "Prefer": "wait=10"})
    held = asyncio.ensure_future(watch)
    await asyncio.sleep(0.2)
    await enable(client, admin, prod)
    answered = await asyncio.wait_for(held, 5)  # the watch wakes on the enablement, not after 10 s
    assert answered.status == 200 and answered.headers["ETag"] == '"2"'
    assert [e["environmentId"] for e in (await answered.json())["config"]["enabledEnvironments"]] == [prod]
    stale = await client.get(SPACES, headers={**viewer, "If-None-Match": created.headers["ETag"]})
    assert stale.status == 200  # not a 304 that would hide the enablement


async def test_setting_the_enablement_it_already_has_changes_nothing(
    client: TestClient, admin: dict, conn: asyncpg.Connection
) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    prod = await create_environment(client, admin, "prod")
    await enable(client, admin, prod)
    again = await client.put(f"{SPACES_ENVIRONMENTS}/{prod}", json={"enabled": True}, headers=admin)
    assert await again.json() == {"success": True, "enabled": True}
    config = await (await client.get(SPACES, headers=admin)).json()
    assert config["config"]["version"] == 2
    assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'enabled'") == 1
