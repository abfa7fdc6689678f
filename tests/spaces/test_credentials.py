"""GET /api/environments/{id}/spaces/credentials (docs/api.md): the one response with the secret, for a
token bound to the environment, with every backend; never for anyone else."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

from backends.env import EnvSettings
from backends.vault import VaultSettings
from spacesvc.settings import Settings
from spacesvc.tokens.model import TokenError
from tests.support.api import (
    BODY,
    SPACES,
    MakeClient,
    Tokens,
    assert_envelope,
    auth,
    create_environment,
    credentials_path,
    enable,
)
from tests.support.openbao import OpenBao
from tests.support.secrecy import SECRET, assert_hidden

ENV_SECRET = "env-backend-secret-" + SECRET


@pytest.fixture(params=["db", "env", "vault"])
async def any_client(
    request: pytest.FixtureRequest, make_client: MakeClient, settings: Settings, vault_settings: Settings
) -> tuple[TestClient, str]:
    """A service on each backend, with the secret it will hold."""
    if request.param == "db":
        return await make_client(settings), SECRET
    if request.param == "env":
        return await make_client(settings.with_changes(secrets=EnvSettings(ENV_SECRET))), ENV_SECRET
    return await make_client(vault_settings), SECRET


def body_for(secret: str) -> dict:
    return {k: v for k, v in BODY.items() if k != "secretKey" or secret == SECRET}


async def test_a_bound_token_receives_the_stored_secret_with_every_backend(
    any_client: tuple[TestClient, str], admin: dict, tokens: Tokens
) -> None:
    client, secret = any_client
    assert (await client.put(SPACES, json=body_for(secret), headers=admin)).status == 201
    prod = await create_environment(client, admin, "prod")
    await enable(client, admin, prod)
    workload = auth(await tokens.create("viewer", ("spaces:credentials",), environment="prod"))
    resp = await client.get(credentials_path(prod), headers=workload)
    assert resp.status == 200
    body = await resp.json()
    assert body == {
        "accessKey": BODY["accessKey"],
        "secretKey": body["secretKey"],
        "region": BODY["region"],
        "endpoint": f"{BODY['region']}.digitaloceanspaces.com",
        "buckets": BODY["buckets"],
        "version": 2,  # created, then enabled for prod
    }
    assert body["secretKey"] == secret  # compared, never printed
    assert resp.headers["Cache-Control"] == "no-store" and resp.headers["ETag"] == '"2"'
    unchanged = await client.get(credentials_path(prod), headers={**workload, "If-None-Match": '"2"'})
    assert unchanged.status == 304 and await unchanged.read() == b"" and unchanged.headers["ETag"] == '"2"'
    await client.patch(SPACES, json={"buckets": ["archive"]}, headers=admin)
    changed = await client.get(credentials_path(prod), headers={**workload, "If-None-Match": '"2"'})
    assert changed.status == 200 and (await changed.json())["buckets"] == ["archive"]


async def test_no_other_token_reads_the_secret_not_even_an_admin(
    client: TestClient, admin: dict, viewer: dict, tokens: Tokens
) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    prod = await create_environment(client, admin, "prod")
    dev = await create_environment(client, admin, "dev")
    await enable(client, admin, prod)
    await enable(client, admin, dev)
    elsewhere = auth(await tokens.create("viewer", ("spaces:credentials",), environment="dev"))
    everything = auth(
        await tokens.create("admin", ("settings:read", "settings:write", "spaces:credentials"), environment="dev")
    )
    for headers in (admin, viewer, elsewhere, everything):
        resp = await client.get(credentials_path(prod), headers=headers)
        body = await assert_envelope(resp, 403, "FORBIDDEN_SCOPE")
        assert_hidden(await resp.text(), SECRET, where="a refusal")
        assert "spaces:credentials" in body["message"]


async def test_credentials_need_the_configuration_enabled_for_the_environment(
    client: TestClient, admin: dict, tokens: Tokens
) -> None:
    prod = await create_environment(client, admin, "prod")
    workload = auth(await tokens.create("viewer", ("spaces:credentials",), environment="prod"))
    await assert_envelope(await client.get(credentials_path(prod), headers=workload), 404, "NOT_FOUND")
    await client.put(SPACES, json=BODY, headers=admin)
    body = await assert_envelope(await client.get(credentials_path(prod), headers=workload), 404, "NOT_FOUND")
    assert "not enabled" in body["message"]
    await enable(client, admin, prod)
    assert (await client.get(credentials_path(prod), headers=workload)).status == 200
    await enable(client, admin, prod, False)
    await assert_envelope(await client.get(credentials_path(prod), headers=workload), 404, "NOT_FOUND")


async def test_a_scope_for_credentials_needs_an_environment(tokens: Tokens) -> None:
    with pytest.raises(TokenError, match="--environment"):
        await tokens.create("viewer", ("spaces:credentials",))


async def test_every_delivery_is_audited_without_the_secret(
    client: TestClient, admin: dict, tokens: Tokens, conn: asyncpg.Connection
) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    prod = await create_environment(client, admin, "prod")
    await enable(client, admin, prod)
    token = await tokens.create("viewer", ("spaces:credentials",), environment="prod", name="backup-prod")
    for _ in range(2):
        assert (await client.get(credentials_path(prod), headers=auth(token))).status == 200
    not_modified = await client.get(credentials_path(prod), headers={**auth(token), "If-None-Match": '"2"'})
    assert not_modified.status == 304  # nothing delivered
    rows = await conn.fetch("SELECT * FROM audit_log WHERE resource_type = 'credentials' ORDER BY id")
    assert len(rows) == 2
    for row in rows:
        assert (row["action"], row["resource_id"], row["actor"]) == ("delivered", prod, "backup-prod")
        assert row["request_id"].startswith("req_")
        assert_hidden(str(dict(row)), SECRET, token, where="an audit entry")


async def test_a_new_secret_is_delivered_from_the_first_request_after_it_is_written(
    client: TestClient, admin: dict, tokens: Tokens
) -> None:
    """The db backend's secret is read once per version: a new version is read again."""
    await client.put(SPACES, json=BODY, headers=admin)
    prod = await create_environment(client, admin, "prod")
    await enable(client, admin, prod)
    workload = auth(await tokens.create("viewer", ("spaces:credentials",), environment="prod"))
    first = await (await client.get(credentials_path(prod), headers=workload)).json()
    assert first["secretKey"] == SECRET
    rotated = "rotated-" + SECRET[8:]
    assert (await client.patch(SPACES, json={"secretKey": rotated}, headers=admin)).status == 200
    second = await (await client.get(credentials_path(prod), headers=workload)).json()
    assert (second["secretKey"] == rotated, second["version"]) == (True, first["version"] + 1)


async def test_a_secret_destroyed_in_vault_stops_being_delivered_within_the_cache_bound(
    make_client: MakeClient,
    vault_settings: Settings,
    vault_config: VaultSettings,
    openbao: OpenBao,
    admin: dict,
    tokens: Tokens,
) -> None:
    """Vault's secret is kept for SPACESVC_VAULT_SECRET_CACHE (1s by default; docs/guarantees.md):
    what an operator does there alone shows in deliveries within that bound, not later."""
    assert vault_config.secret_cache == 1.0
    client = await make_client(vault_settings)
    await client.put(SPACES, json=BODY, headers=admin)
    prod = await create_environment(client, admin, "prod")
    await enable(client, admin, prod)
    workload = auth(await tokens.create("viewer", ("spaces:credentials",), environment="prod"))
    assert (await (await client.get(credentials_path(prod), headers=workload)).json())["secretKey"] == SECRET
    openbao.admin().secrets.kv.v2.delete_metadata_and_all_versions(
        path=vault_config.path, mount_point=vault_config.mount
    )
    destroyed = time.monotonic()
    kept = await client.get(credentials_path(prod), headers=workload)
    assert kept.status == 200  # from memory, within the bound
    while (resp := await client.get(credentials_path(prod), headers=workload)).status == 200:
        assert time.monotonic() - destroyed < vault_config.secret_cache, "delivered past the bound"
        await asyncio.sleep(0.05)
    gone = await assert_envelope(resp, 404, "NOT_FOUND")
    assert gone["message"] == "No secretKey is stored for the Spaces configuration."


async def test_concurrent_deliveries_with_vault_read_it_once_per_bound(
    make_client: MakeClient, settings: Settings, vault_config: VaultSettings, admin: dict, tokens: Tokens
) -> None:
    """Vault is not read on every delivery: deliveries within SPACESVC_VAULT_SECRET_CACHE share
    what one read returned (docs/guarantees.md)."""
    bound = 3.0
    client = await make_client(settings.with_changes(secrets=dataclasses.replace(vault_config, secret_cache=bound)))
    await client.put(SPACES, json=BODY, headers=admin)
    prod = await create_environment(client, admin, "prod")
    await enable(client, admin, prod)
    workload = auth(await tokens.create("viewer", ("spaces:credentials",), environment="prod"))

    def vault_reads() -> float:
        labels = {"backend": "vault", "operation": "read", "outcome": "ok"}
        return REGISTRY.get_sample_value("spacesvc_secret_backend_calls_total", labels) or 0.0

    async def deliveries() -> list[int]:
        answers = await asyncio.gather(*(client.get(credentials_path(prod), headers=workload) for _ in range(50)))
        return [resp.status for resp in answers]

    assert (await client.get(credentials_path(prod), headers=workload)).status == 200  # in memory now
    before = vault_reads()
    assert await deliveries() == [200] * 50
    assert vault_reads() == before  # within the bound: none
    await asyncio.sleep(bound)
    assert await deliveries() == [200] * 50
    assert vault_reads() == before + 1  # past it: one, shared
