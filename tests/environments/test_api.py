"""/api/environments (docs/api.md): list, create, delete; deleting one revokes the tokens bound to it."""

from __future__ import annotations

import asyncpg
from aiohttp.test_utils import TestClient

from tests.support.api import (
    BODY,
    ENVIRONMENTS,
    SPACES,
    Tokens,
    assert_envelope,
    auth,
    create_environment,
    credentials_path,
    enable,
)


async def test_environments_are_created_listed_by_name_and_deleted(
    client: TestClient, admin: dict, viewer: dict
) -> None:
    staging = await create_environment(client, admin, "staging")
    production = await create_environment(client, admin, "production")
    listed = (await (await client.get(ENVIRONMENTS, headers=viewer)).json())["environments"]
    assert [(e["id"], e["name"]) for e in listed] == [(production, "production"), (staging, "staging")]
    assert all(e["createdAt"].endswith("Z") for e in listed)
    resp = await client.delete(f"{ENVIRONMENTS}/{staging}", headers=admin)
    assert resp.status == 200 and await resp.json() == {"success": True}
    listed = (await (await client.get(ENVIRONMENTS, headers=viewer)).json())["environments"]
    assert [e["name"] for e in listed] == ["production"]
    await assert_envelope(await client.delete(f"{ENVIRONMENTS}/{staging}", headers=admin), 404, "NOT_FOUND")


async def test_a_taken_name_is_a_conflict_and_a_bad_name_a_validation_error(client: TestClient, admin: dict) -> None:
    await create_environment(client, admin, "prod")
    body = await assert_envelope(await client.post(ENVIRONMENTS, json={"name": "prod"}, headers=admin), 409, "CONFLICT")
    assert body["field"] == "name"
    for bad in ("Prod", "", "a" * 64, "with space", "under_score"):
        resp = await client.post(ENVIRONMENTS, json={"name": bad}, headers=admin)
        assert (await assert_envelope(resp, 400, "VALIDATION_ERROR"))["field"] == "name"
    for bad_body in ({}, {"name": 5}, {"name": "ok", "extra": 1}):
        await assert_envelope(await client.post(ENVIRONMENTS, json=bad_body, headers=admin), 400, "VALIDATION_ERROR")


async def test_only_an_admin_with_settings_write_changes_environments(
    client: TestClient, admin: dict, viewer: dict, tokens: Tokens
) -> None:
    await assert_envelope(await client.post(ENVIRONMENTS, json={"name": "x"}, headers=viewer), 403, "FORBIDDEN_ROLE")
    reader = auth(await tokens.create("admin", ("settings:read",)))
    await assert_envelope(await client.post(ENVIRONMENTS, json={"name": "x"}, headers=reader), 403, "FORBIDDEN_SCOPE")
    await assert_envelope(await client.get(ENVIRONMENTS), 401, "UNAUTHORIZED")


async def test_deleting_an_environment_removes_its_enablement_and_its_tokens_stop_working(
    client: TestClient, admin: dict, tokens: Tokens, conn: asyncpg.Connection
) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    environment = await create_environment(client, admin, "prod")
    await enable(client, admin, environment)
    workload = auth(await tokens.create("viewer", ("spaces:credentials",), environment="prod"))
    assert (await client.get(credentials_path(environment), headers=workload)).status == 200
    assert (await client.delete(f"{ENVIRONMENTS}/{environment}", headers=admin)).status == 200
    await assert_envelope(await client.get(credentials_path(environment), headers=workload), 401, "UNAUTHORIZED")
    config = (await (await client.get(SPACES, headers=admin)).json())["config"]
    assert config["enabledEnvironments"] == []
    assert await conn.fetchval("SELECT count(*) FROM api_tokens WHERE revoked_at IS NOT NULL") == 1
