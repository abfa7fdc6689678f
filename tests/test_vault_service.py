"""The service on the vault backend, against a real OpenBao: consistency, failures, Vault's states,
token life-cycle, and no secret anywhere but Vault."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path

import asyncpg
import hvac
import pytest
from aiohttp.test_utils import TestClient

from backends import SecretLocation
from backends.vault import VaultSecretBackend, VaultSettings, policy_for
from spacesvc.settings import Settings
from tests.support.api import BODY, SPACES, MakeClient, assert_envelope, readiness
from tests.support.faults import FAIL_ROW_UPDATES
from tests.support.logs import ServerLog
from tests.support.openbao import OpenBao
from tests.support.postgres import bin_dir_for_major
from tests.support.secrecy import SECRET, assert_hidden

HANG = 15.0  # not a speed target: past this a request counts as hung


@pytest.fixture
async def vault_client(make_client: MakeClient, vault_settings: Settings) -> TestClient:
    return await make_client(vault_settings)


def read_vault(openbao: OpenBao, config: VaultSettings, version: int | None = None) -> dict:
    return openbao.admin().secrets.kv.v2.read_secret_version(
        path=config.path, version=version, mount_point="secret", raise_on_deleted_version=True
    )["data"]


async def test_put_stores_the_secret_in_vault_and_the_version_on_the_row(
    vault_client: TestClient, admin: dict, openbao: OpenBao, vault_config: VaultSettings, conn: asyncpg.Connection
) -> None:
    resp = await vault_client.put(SPACES, json=BODY, headers=admin)
    assert resp.status == 201
    config = (await resp.json())["config"]
    assert config["secretBackend"] == "vault" and config["hasSecretKey"] is True
    stored = read_vault(openbao, vault_config)
    assert stored["data"] == {"secretKey": SECRET, "configId": config["id"]}
    assert await conn.fetchval("SELECT secret_version FROM spaces_config") == stored["metadata"]["version"]
    assert await conn.fetchval("SELECT count(*) FROM secret_ciphertexts") == 0


async def test_the_secret_is_absent_from_postgresql_and_logs(
    vault_client: TestClient,
    admin: dict,
    openbao: OpenBao,
    database_url: str,
    conn: asyncpg.Connection,
    server_log: ServerLog,
) -> None:
    await vault_client.put(SPACES, json=BODY, headers=admin)
    await vault_client.patch(SPACES, json={"secretKey": SECRET + "-2"}, headers=admin)
    await vault_client.get("/readyz")
    major = int(await conn.fetchval("SHOW server_version_num")) // 10000
    dump = subprocess.run(
        [str(bin_dir_for_major(major) / "pg_dump"), database_url], check=True, capture_output=True, text=True
    ).stdout
    for text in (dump, server_log.text):
        assert_hidden(text, SECRET, openbao.root_token)


async def test_a_write_failing_after_vault_leaves_the_old_configuration_readable(
    vault_client: TestClient, admin: dict, openbao: OpenBao, vault_config: VaultSettings, conn: asyncpg.Connection
) -> None:
    await vault_client.put(SPACES, json=BODY, headers=admin)
    old_version = await conn.fetchval("SELECT secret_version FROM spaces_config")
    await conn.execute(FAIL_ROW_UPDATES)

    resp = await vault_client.put(SPACES, json={**BODY, "secretKey": SECRET + "-new"}, headers=admin)
    assert resp.status == 500
    row = await conn.fetchrow("SELECT id::text, secret_version, version FROM spaces_config")
    assert (row["secret_version"], row["version"]) == (old_version, 1)
    assert read_vault(openbao, vault_config)["metadata"]["version"] == old_version + 1  # the orphan
    backend = VaultSecretBackend(vault_config)
    try:
        assert await backend.read(conn, SecretLocation(row["id"], row["secret_version"])) == SECRET
    finally:
        await backend.close()

    await conn.execute("DROP TRIGGER fail_update ON spaces_config")
    resp = await vault_client.put(SPACES, json={**BODY, "secretKey": SECRET + "-new"}, headers=admin)
    assert resp.status == 200 and (await resp.json())["config"]["version"] == 2
    assert read_vault(openbao, vault_config)["data"]["secretKey"] == SECRET + "-new"


async def test_delete_removes_every_version_of_the_secret(
    vault_client: TestClient, admin: dict, openbao: OpenBao, vault_config: VaultSettings
) -> None:
    await vault_client.put(SPACES, json=BODY, headers=admin)
    await vault_client.patch(SPACES, json={"secretKey": SECRET + "-2"}, headers=admin)
    assert (await vault_client.delete(SPACES, headers=admin)).status == 200
    with pytest.raises(hvac.exceptions.InvalidPath):
        openbao.admin().secrets.kv.v2.read_secret_metadata(path=vault_config.path, mount_point="secret")


async def test_vault_keeps_two_versions_of_the_secret_also_after_a_delete_and_a_new_put(
    vault_client: TestClient, admin: dict, openbao: OpenBao, vault_config: VaultSettings
) -> None:
    """docs/vault.md: the service keeps max_versions=2 itself; a DELETE purges the metadata with it."""

    def metadata() -> dict:
        return openbao.admin().secrets.kv.v2.read_secret_metadata(path=vault_config.path, mount_point="secret")["data"]

    assert (await vault_client.put(SPACES, json=BODY, headers=admin)).status == 201
    assert metadata()["max_versions"] == 2
    assert (await vault_client.delete(SPACES, headers=admin)).status == 200
    assert (await vault_client.put(SPACES, json=BODY, headers=admin)).status == 201
    for n in range(3):
        resp = await vault_client.patch(SPACES, json={"secretKey": f"{SECRET}-{n}"}, headers=admin)
        assert resp.status == 200
    kept = metadata()
    assert kept["max_versions"] == 2 and kept["current_version"] == 4
    assert sorted(int(version) for version in kept["versions"]) == [3, 4]
    assert read_vault(openbao, vault_config)["data"]["secretKey"] == f"{SECRET}-2"
    resp = await vault_client.get(SPACES, headers=admin)
    assert (await resp.json())["config"]["hasSecretKey"] is True


async def test_vault_hung_is_503_within_the_bound_and_recovers(
    vault_client: TestClient, admin: dict, openbao: OpenBao
) -> None:
    assert (await vault_client.put(SPACES, json=BODY, headers=admin)).status == 201
    openbao.signal(signal.SIGSTOP)
    try:
        resp = await asyncio.wait_for(
            vault_client.put(SPACES, json={**BODY, "secretKey": SECRET + "-2"}, headers=admin), HANG
        )
        body = await assert_envelope(resp, 503, "SERVICE_UNAVAILABLE")
        assert "Vault did not answer" in body["message"] and int(resp.headers["Retry-After"]) > 0
        ready = await asyncio.wait_for(vault_client.get("/readyz"), HANG)
        body = await assert_envelope(ready, 503, "SERVICE_UNAVAILABLE")
        assert body["checks"]["secret_backend"]["ok"] is False
        assert (await vault_client.get("/healthz")).status == 200
        assert (await vault_client.get(SPACES, headers=admin)).status == 200  # reads need no Vault
    finally:
        openbao.signal(signal.SIGCONT)
    resp = await vault_client.put(SPACES, json={**BODY, "secretKey": SECRET + "-2"}, headers=admin)
    assert resp.status == 200
    await readiness(vault_client, 200)


async def test_permission_denied_shows_in_readyz_and_writes_answer_503_with_a_hint(
    make_client: MakeClient, settings: Settings, openbao: OpenBao, vault_config: VaultSettings, admin: dict
) -> None:
    openbao.write_policy("not-this-path", policy_for("secret", "another/path"))
    token = openbao.create_token(["not-this-path"], ttl="1h")
    config = VaultSettings(addr=openbao.addr, token=token, path=vault_config.path, timeout=2.0)
    client = await make_client(settings.with_changes(secrets=config))
    body = await assert_envelope(await client.get("/readyz", headers=admin), 503, "SERVICE_UNAVAILABLE")
    assert "permission denied" in body["checks"]["secret_backend"]["detail"]
    resp = await client.put(SPACES, json=BODY, headers=admin)
    body = await assert_envelope(resp, 503, "SERVICE_UNAVAILABLE")
    assert "denied permission" in body["message"] and vault_config.path in body["hint"]
    assert_hidden(json.dumps(body), token, where="the error")


async def test_a_renewable_short_ttl_token_is_renewed_and_writes_keep_working(
    make_client: MakeClient, settings: Settings, openbao: OpenBao, vault_config: VaultSettings, admin: dict
) -> None:
    openbao.write_policy("spacesvc-renew", policy_for("secret", vault_config.path))
    token = openbao.create_token(["spacesvc-renew"], ttl="2s", explicit_max_ttl="5m", renewable=True)
    config = VaultSettings(addr=openbao.addr, token=token, path=vault_config.path, timeout=2.0)
    client = await make_client(settings.with_changes(secrets=config))
    assert (await client.put(SPACES, json=BODY, headers=admin)).status == 201
    await asyncio.sleep(6.5)  # more than three TTLs
    resp = await client.patch(SPACES, json={"secretKey": SECRET + "-later"}, headers=admin)
    assert resp.status == 200
    await readiness(client, 200)


async def test_an_approle_token_past_its_max_ttl_is_replaced_by_a_new_login(
    make_client: MakeClient,
    settings: Settings,
    openbao: OpenBao,
    vault_config: VaultSettings,
    admin: dict,
    server_log: ServerLog,
) -> None:
    openbao.write_policy("spacesvc-approle", policy_for("secret", vault_config.path))
    role_id, secret_id = openbao.approle("spacesvc-short", ["spacesvc-approle"], token_ttl="2s", token_max_ttl="3s")
    config = VaultSettings(addr=openbao.addr, role_id=role_id, secret_id=secret_id, path=vault_config.path, timeout=2.0)
    client = await make_client(settings.with_changes(secrets=config))
    assert (await client.put(SPACES, json=BODY, headers=admin)).status == 201
    await asyncio.sleep(7)  # more than twice the max TTL
    resp = await client.patch(SPACES, json={"secretKey": SECRET + "-later"}, headers=admin)
    assert resp.status == 200
    await readiness(client, 200)
    # the last renewals fail ("past the max TTL"); the service logs in again without an outage
    logged = [json.loads(line) for line in server_log.lines]
    assert [line["msg"] for line in logged if line["level"] in ("warning", "error")] == []


async def test_a_token_that_can_be_neither_renewed_nor_replaced_fails_readiness_with_a_log_line(
    make_client: MakeClient,
    settings: Settings,
    openbao: OpenBao,
    vault_config: VaultSettings,
    admin: dict,
    server_log: ServerLog,
) -> None:
    openbao.write_policy("spacesvc-once", policy_for("secret", vault_config.path))
    token = openbao.create_token(["spacesvc-once"], ttl="2s", renewable=False)
    config = VaultSettings(addr=openbao.addr, token=token, path=vault_config.path, timeout=2.0)
    client = await make_client(settings.with_changes(secrets=config))
    assert (await client.put(SPACES, json=BODY, headers=admin)).status == 201
    await asyncio.sleep(3)
    body = await readiness(client, 503, admin)  # the detail is an admin's
    assert "expired" in body["checks"]["secret_backend"]["detail"]
    resp = await client.patch(SPACES, json={"secretKey": SECRET + "-x"}, headers=admin)
    await assert_envelope(resp, 503, "SERVICE_UNAVAILABLE")
    logged = [json.loads(line) for line in server_log.lines]
    assert any(line["level"] == "error" and "expired" in line["msg"] for line in logged)
    assert_hidden(server_log.text, token, where="the server log")


async def test_sealing_vault_while_serving_logs_each_change_once_as_the_docs_say(
    make_client: MakeClient, settings: Settings, admin: dict, tmp_path: Path, server_log: ServerLog
) -> None:
    """docs/vault.md, 'Logging': one `vault: …` ERROR and one readiness line when it is sealed,
    one INFO each when it is back; not a line per request or probe."""
    bao = OpenBao.persistent(tmp_path / "bao")
    try:
        await asyncio.to_thread(bao.initialize)
        config = VaultSettings(addr=bao.addr, token=bao.root_token, path="spacesvc/spaces", timeout=2.0)
        client = await make_client(settings.with_changes(secrets=config))
        assert (await client.put(SPACES, json=BODY, headers=admin)).status == 201
        server_log.lines.clear()

        await asyncio.to_thread(bao.admin().sys.seal)
        for _ in range(3):
            await assert_envelope(await client.get("/readyz"), 503, "SERVICE_UNAVAILABLE")
            resp = await client.patch(SPACES, json={"secretKey": "x" * 20}, headers=admin)
            assert (await assert_envelope(resp, 503, "SERVICE_UNAVAILABLE"))["message"] == "Vault is sealed"
        await asyncio.to_thread(bao.unseal)
        await readiness(client, 200)  # /readyz is computed at most once a second
        for _ in range(3):
            assert (await client.get("/readyz")).status == 200
        resp = await client.patch(SPACES, json={"secretKey": SECRET + "-after"}, headers=admin)
        assert resp.status == 200
    finally:
        bao.stop()
    logged = [
        (line["level"], line["logger"], line["msg"])
        for line in map(json.loads, server_log.lines)
        if line["level"] in ("info", "warning", "error")
        and line["logger"].startswith("spacesvc.")
        and line["logger"] != "spacesvc.access"
    ]
    sealed = "Vault is sealed: Unseal it: `bao operator unseal` (or `vault operator unseal`)."
    assert logged == [
        ("error", "spacesvc.vault", f"vault: {sealed}"),
        ("warning", "spacesvc.readiness", f"secret backend not ready: vault: {sealed}"),
        ("info", "spacesvc.vault", "vault: secret/spacesvc/spaces works again"),
        ("info", "spacesvc.readiness", "secret backend ready again"),
    ], logged


async def test_vault_uninitialized_sealed_killed_and_back(
    make_client: MakeClient, settings: Settings, admin: dict, tmp_path: Path
) -> None:
    bao = OpenBao.persistent(tmp_path / "bao")
    try:
        config = VaultSettings(addr=bao.addr, token="placeholder-until-init", path="spacesvc/spaces", timeout=2.0)
        client = await make_client(settings.with_changes(secrets=config))
        body = await assert_envelope(await client.get("/readyz", headers=admin), 503, "SERVICE_UNAVAILABLE")
        assert "not initialized" in body["checks"]["secret_backend"]["detail"]
        await client.close()

        await asyncio.to_thread(bao.initialize)
        config = VaultSettings(addr=bao.addr, token=bao.root_token, path="spacesvc/spaces", timeout=2.0)
        client = await make_client(settings.with_changes(secrets=config))
        assert (await client.put(SPACES, json=BODY, headers=admin)).status == 201

        bao.kill()
        resp = await asyncio.wait_for(client.patch(SPACES, json={"secretKey": "x" * 20}, headers=admin), HANG)
        body = await assert_envelope(resp, 503, "SERVICE_UNAVAILABLE")
        assert "not reachable" in body["message"]
        ready = await assert_envelope(await client.get("/readyz"), 503, "SERVICE_UNAVAILABLE")
        assert ready["checks"]["secret_backend"]["ok"] is False

        bao.start()
        await asyncio.to_thread(bao.wait_until, lambda health: health.get("sealed"))
        await asyncio.sleep(1.1)  # /readyz is computed at most once a second
        ready = await assert_envelope(await client.get("/readyz", headers=admin), 503, "SERVICE_UNAVAILABLE")
        assert "sealed" in ready["checks"]["secret_backend"]["detail"]
        resp = await client.patch(SPACES, json={"secretKey": "x" * 20}, headers=admin)
        body = await assert_envelope(resp, 503, "SERVICE_UNAVAILABLE")
        assert "nseal" in body["hint"]

        await asyncio.to_thread(bao.unseal)
        resp = await client.patch(SPACES, json={"secretKey": SECRET + "-after"}, headers=admin)
        assert resp.status == 200
        await readiness(client, 200)
    finally:
        bao.stop()
