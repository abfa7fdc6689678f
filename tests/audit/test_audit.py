"""The audit trail (docs/api.md): an entry for every change and delivery, in the change's transaction;
GET /api/audit with a cursor and filters; retention; never a secret or a token."""

from __future__ import annotations

import asyncpg
from aiohttp.test_utils import TestClient

from spacesvc.sweeper import sweep_once
from tests.support.api import (
    AUDIT,
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
from tests.support.cli import run, service_env
from tests.support.faults import FAIL_ROW_UPDATES
from tests.support.secrecy import SECRET, assert_hidden


async def trail(client: TestClient, admin: dict, **query: str) -> list[dict]:
    resp = await client.get(AUDIT, params=query, headers=admin)
    assert resp.status == 200, await resp.text()
    return list((await resp.json())["entries"])


async def test_every_kind_of_change_has_its_entry(client: TestClient, admin: dict, tokens: Tokens) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    await client.put(SPACES, json={**BODY, "region": "nyc3", "secretKey": SECRET + "-2"}, headers=admin)
    await client.put(SPACES, json={**BODY, "region": "nyc3", "secretKey": SECRET + "-2"}, headers=admin)  # no change
    await client.patch(SPACES, json={"buckets": ["archive"]}, headers=admin)
    prod = await create_environment(client, admin, "prod")
    await enable(client, admin, prod)
    await enable(client, admin, prod, False)
    await tokens.create("viewer", ("settings:read",), name="reader")
    await client.delete(f"{ENVIRONMENTS}/{prod}", headers=admin)
    await client.delete(SPACES, headers=admin)
    entries = list(reversed(await trail(client, admin)))
    summary = [(e["resourceType"], e["action"]) for e in entries]
    assert summary == [
        ("token", "created"),  # the admin fixture's token
        ("spaces_config", "created"),
        ("spaces_config", "replaced"),
        ("spaces_config", "patched"),
        ("environment", "created"),
        ("environment", "enabled"),
        ("environment", "disabled"),
        ("token", "created"),
        ("environment", "deleted"),
        ("spaces_config", "deleted"),
    ]
    created, replaced, patched = entries[1:4]
    assert created["details"]["fields"] == ["accessKey", "region", "endpoint", "buckets", "secretKey"]
    assert replaced["details"]["fields"] == ["region", "endpoint", "secretKey"]
    assert patched["details"]["fields"] == ["buckets"]
    for entry in entries[1:]:
        assert set(entry) == {"id", "at", "action", "resourceType", "resourceId", "actor", "requestId", "details"}
    assert created["actor"] == "admin-token" and created["requestId"].startswith("req_")


async def test_a_failed_change_leaves_no_entry(client: TestClient, admin: dict, conn: asyncpg.Connection) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    before = await trail(client, admin)
    await conn.execute(FAIL_ROW_UPDATES)
    assert (await client.put(SPACES, json={**BODY, "accessKey": "NEW"}, headers=admin)).status == 500
    assert await trail(client, admin) == before


async def test_the_trail_is_paged_newest_first_and_filtered(client: TestClient, admin: dict, viewer: dict) -> None:
    for name in ("a", "b", "c", "d"):
        await create_environment(client, admin, name)
    first = await client.get(AUDIT, params={"limit": "2", "resourceType": "environment"}, headers=admin)
    page = await first.json()
    assert [e["details"]["name"] for e in page["entries"]] == ["d", "c"]
    second = await trail(client, admin, limit="2", resourceType="environment", before=str(page["nextBefore"]))
    assert [e["details"]["name"] for e in second] == ["b", "a"]
    assert await trail(client, admin, action="deleted") == []
    assert len(await trail(client, admin, action="created")) == 6  # and the admin and viewer tokens
    await assert_envelope(await client.get(AUDIT, headers=viewer), 403, "FORBIDDEN_ROLE")
    for bad in ({"limit": "501"}, {"limit": "0"}, {"before": "x"}, {"action": "exploded"}, {"resourceType": "x"}):
        await assert_envelope(await client.get(AUDIT, params=bad, headers=admin), 400, "VALIDATION_ERROR")


async def test_no_entry_holds_a_secret_or_a_token(client: TestClient, admin: dict, tokens: Tokens) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    await client.patch(SPACES, json={"secretKey": SECRET + "-rotated"}, headers=admin)
    prod = await create_environment(client, admin, "prod")
    await enable(client, admin, prod)
    workload = await tokens.create("viewer", ("spaces:credentials",), environment="prod")
    assert (await client.get(credentials_path(prod), headers=auth(workload))).status == 200
    text = await (await client.get(AUDIT, headers=admin)).text()
    admin_token = admin["Authorization"].removeprefix("Bearer ")
    assert_hidden(text, SECRET, workload, admin_token, where="the audit trail")


async def test_entries_past_the_retention_are_swept(client: TestClient, admin: dict, conn: asyncpg.Connection) -> None:
    await create_environment(client, admin, "prod")
    await conn.execute("UPDATE audit_log SET at = now() - interval '366 days' WHERE resource_type = 'token'")
    await sweep_once(client.app)
    assert [e["resourceType"] for e in await trail(client, admin)] == ["environment"]


async def test_the_command_line_records_and_lists_the_trail(database_url: str) -> None:
    env = service_env(database_url)
    created = run("environments", "create", "staging", env=env)
    assert created.returncode == 0, created.stderr
    listed = run("audit", "list", "--limit", "5", env=env)
    assert listed.returncode == 0
    newest = listed.stdout.splitlines()[0]
    assert "environment.created" in newest and created.stdout.splitlines()[-1] in newest and "cli:" in newest
    assert run("audit", "list", "--limit", "501", env=env).returncode == 2
