"""GET /api/audit-logs: the trail in BRIDGEPORT's shape, so its audit page reads spacesvc's
(docs/api.md): filters, limit and offset, the total, the token and the environment of an entry."""

from __future__ import annotations

import json

from aiohttp.test_utils import TestClient

from tests.support.api import (
    BODY,
    SPACES,
    Tokens,
    assert_envelope,
    auth,
    create_environment,
    credentials_path,
    enable,
)
from tests.support.secrecy import SECRET, assert_hidden

AUDIT_LOGS = "/api/audit-logs"


async def logs(client: TestClient, admin: dict, **query: str) -> dict:
    resp = await client.get(AUDIT_LOGS, params=query, headers=admin)
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def test_the_trail_reads_as_bridgeports_audit_logs(client: TestClient, tokens: Tokens) -> None:
    admin_token = await tokens.create("admin", name="ops-admin")
    admin = auth(admin_token)
    await client.put(SPACES, json=BODY, headers=admin)
    prod = await create_environment(client, admin, "prod")
    await enable(client, admin, prod)
    workload = await tokens.create("viewer", ("spaces:credentials",), environment="prod", name="backup-prod")
    assert (await client.get(credentials_path(prod), headers=auth(workload))).status == 200

    page = await logs(client, admin)
    assert page["total"] == len(page["logs"]) == 6  # ops-admin and backup-prod created, config, env, enable, delivery
    delivery, created_token, enabled, created_env, config, _ = page["logs"]  # newest first
    assert_hidden(json.dumps(page), SECRET, admin_token, workload, where="the audit logs")
    assert delivery == {
        "id": delivery["id"],
        "action": "delivered",
        "resourceType": "credentials",
        "resourceId": prod,
        "resourceName": "prod",
        "details": delivery["details"],
        "success": True,
        "error": None,
        "createdAt": delivery["createdAt"],
        "user": {"id": delivery["user"]["id"], "email": None, "name": "backup-prod"},
        "environment": {"id": prod, "name": "prod"},
    }
    assert json.loads(delivery["details"]) == {"environment": "prod", "token": "backup-prod", "version": 2}
    assert (enabled["action"], enabled["environment"], enabled["user"]["name"]) == (
        "enabled",
        {"id": prod, "name": "prod"},
        "ops-admin",
    )
    assert enabled["user"]["id"] != delivery["user"]["id"]
    assert (created_env["action"], created_env["resourceName"]) == ("created", "prod")
    assert (created_token["resourceType"], created_token["resourceName"]) == ("token", "backup-prod")
    assert (config["resourceType"], config["environment"]) == ("spaces_config", None)
    assert page["logs"][-1]["user"] is None  # made by the test's setup, not by a token
    assert [entry["id"] for entry in page["logs"]] == sorted((entry["id"] for entry in page["logs"]), reverse=True)


async def test_filters_limit_and_offset_narrow_the_logs_and_the_total(
    client: TestClient, admin: dict, tokens: Tokens
) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    prod = await create_environment(client, admin, "prod")
    dev = await create_environment(client, admin, "dev")
    await enable(client, admin, prod)
    await enable(client, admin, dev)
    await enable(client, admin, prod, False)

    of_prod = await logs(client, admin, environmentId=prod)
    assert of_prod["total"] == 3
    assert [entry["action"] for entry in of_prod["logs"]] == ["disabled", "enabled", "created"]
    assert {entry["environment"]["id"] for entry in of_prod["logs"]} == {prod}
    assert (await logs(client, admin, resourceType="environment", action="enabled"))["total"] == 2
    assert (await logs(client, admin, resourceId=dev))["total"] == 2
    assert await logs(client, admin, action="no-such-action") == {"logs": [], "total": 0}

    everything = await logs(client, admin)
    second_page = await logs(client, admin, limit="2", offset="2")
    assert second_page["total"] == everything["total"] == 7  # the admin token too
    assert second_page["logs"] == everything["logs"][2:4]
    for bad in ({"limit": "0"}, {"limit": "501"}, {"offset": "-1"}, {"offset": "x"}):
        resp = await client.get(AUDIT_LOGS, params=bad, headers=admin)
        assert (await assert_envelope(resp, 400, "VALIDATION_ERROR"))["field"] == next(iter(bad))


async def test_only_an_admin_reads_the_audit_logs(client: TestClient, viewer: dict) -> None:
    await assert_envelope(await client.get(AUDIT_LOGS, headers=viewer), 403, "FORBIDDEN_ROLE")
    await assert_envelope(await client.get(AUDIT_LOGS), 401, "UNAUTHORIZED")


async def test_a_filter_with_a_control_character_is_a_validation_error(client: TestClient, admin: dict) -> None:
    for path in (AUDIT_LOGS, "/api/audit"):
        resp = await client.get(path, params={"resourceType": "spaces_config\x00"}, headers=admin)
        body = await assert_envelope(resp, 400, "VALIDATION_ERROR")
        assert body["field"] == "resourceType"
