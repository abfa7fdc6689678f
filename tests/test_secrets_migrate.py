"""`spacesvc secrets migrate --to vault|db`: the secret moves, the source is kept until confirmed."""

from __future__ import annotations

import json

import asyncpg
import hvac
import pytest
from aiohttp.test_utils import TestClient

from backends import SecretLocation
from backends.db import DbSecretBackend, DbSettings
from backends.vault import VaultSettings
from spacesvc.settings import Settings
from tests.support.api import BODY, SPACES, MakeClient, assert_envelope, readiness
from tests.support.cli import run, service_env
from tests.support.openbao import OpenBao
from tests.support.secrecy import SECRET, TEST_KEY, assert_hidden


@pytest.fixture
def cli_env(database_url: str, vault_config: VaultSettings, openbao: OpenBao) -> dict[str, str]:
    return service_env(
        database_url,
        VAULT_ADDR=openbao.addr,
        VAULT_TOKEN=openbao.root_token,
        SPACESVC_VAULT_PATH=vault_config.path,
    )


async def test_the_secret_moves_from_db_to_vault_and_back(
    client: TestClient,
    admin: dict,
    cli_env: dict,
    conn: asyncpg.Connection,
    openbao: OpenBao,
    vault_config: VaultSettings,
    vault_settings: Settings,
    make_client: MakeClient,
) -> None:
    assert (await client.put(SPACES, json=BODY, headers=admin)).status == 201

    result = run("secrets", "migrate", "--to", "vault", env={**cli_env, "SPACESVC_SECRET_BACKEND": "db"})
    assert result.returncode == 0, result.stderr
    assert "SPACESVC_SECRET_BACKEND=vault" in result.stdout
    assert_hidden(result.stdout + result.stderr, openbao.root_token, where="the command's output")
    stored = openbao.admin().secrets.kv.v2.read_secret_version(
        path=vault_config.path, mount_point="secret", raise_on_deleted_version=True
    )
    assert stored["data"]["data"]["secretKey"] == SECRET
    assert await conn.fetchval("SELECT count(*) FROM secret_ciphertexts") == 0
    row = await conn.fetchrow("SELECT secret_backend, secret_version, version FROM spaces_config")
    assert (row["secret_backend"], row["secret_version"], row["version"]) == ("vault", 1, 2)

    on_vault = await make_client(vault_settings)
    config = (await (await on_vault.get(SPACES, headers=admin)).json())["config"]
    assert config["secretBackend"] == "vault" and config["hasSecretKey"] is True
    assert (await on_vault.get("/readyz")).status == 200

    back = run("secrets", "migrate", "--to", "db", env={**cli_env, "SPACESVC_SECRET_BACKEND": "vault"})
    assert back.returncode == 0, back.stderr
    config_id = await conn.fetchval("SELECT id::text FROM spaces_config")
    assert await DbSecretBackend(DbSettings((TEST_KEY,))).read(conn, SecretLocation(config_id)) == SECRET
    with pytest.raises(hvac.exceptions.InvalidPath):
        openbao.admin().secrets.kv.v2.read_secret_metadata(path=vault_config.path, mount_point="secret")
    moves = await conn.fetch(
        "SELECT details FROM audit_log WHERE resource_type = 'secret' AND action = 'moved' ORDER BY id"
    )
    assert [json.loads(row["details"]) for row in moves] == [
        {"from": "db", "to": "vault"},
        {"from": "vault", "to": "db"},
    ]


async def test_an_unreachable_target_keeps_the_source_untouched(
    client: TestClient, admin: dict, cli_env: dict, conn: asyncpg.Connection
) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    before = await conn.fetchrow("SELECT * FROM secret_ciphertexts")
    env = {**cli_env, "SPACESVC_SECRET_BACKEND": "db", "VAULT_ADDR": "http://127.0.0.1:1"}
    result = run("secrets", "migrate", "--to", "vault", env=env)
    assert result.returncode == 2
    assert "Vault is not reachable" in result.stderr and "Traceback" not in result.stderr
    assert "Check VAULT_ADDR" in result.stderr  # the error keeps its hint
    assert await conn.fetchrow("SELECT * FROM secret_ciphertexts") == before
    assert await conn.fetchval("SELECT secret_backend FROM spaces_config") == "db"


async def test_moving_to_where_the_secret_is_already_is_a_no_op(
    client: TestClient, admin: dict, cli_env: dict, conn: asyncpg.Connection
) -> None:
    """For automation: running a finished migration again changes nothing and succeeds."""
    await client.put(SPACES, json=BODY, headers=admin)
    before = await conn.fetchrow("SELECT version, secret_backend FROM spaces_config")
    result = run("secrets", "migrate", "--to", "db", env={**cli_env, "SPACESVC_SECRET_BACKEND": "vault"})
    assert result.returncode == 0, result.stderr
    assert "already in the db backend" in result.stdout and "nothing to do" in result.stdout
    assert "now set SPACESVC_SECRET_BACKEND=db on every replica and restart" in result.stdout
    assert await conn.fetchrow("SELECT version, secret_backend FROM spaces_config") == before
    again = run("secrets", "migrate", "--to", "db", env={**cli_env, "SPACESVC_SECRET_BACKEND": "db"})
    assert again.returncode == 0 and "keep SPACESVC_SECRET_BACKEND=db" in again.stdout


async def test_the_source_is_the_backend_the_configuration_names(
    client: TestClient, admin: dict, cli_env: dict, conn: asyncpg.Connection, vault_config: VaultSettings
) -> None:
    """An operator who switched SPACESVC_SECRET_BACKEND first can still move the secret."""
    await client.put(SPACES, json=BODY, headers=admin)
    env = {**cli_env, "SPACESVC_SECRET_BACKEND": "vault"}  # the target's; the row still says db
    result = run("secrets", "migrate", "--to", "vault", env=env)
    assert result.returncode == 0, result.stderr
    assert await conn.fetchval("SELECT secret_backend FROM spaces_config") == "vault"
    again = run("secrets", "migrate", "--to", "vault", env=env)
    assert again.returncode == 0 and "nothing to do" in again.stdout


async def test_after_moving_to_db_a_replica_still_on_vault_says_to_switch_and_cannot_move_it_back(
    admin: dict, cli_env: dict, conn: asyncpg.Connection, vault_settings: Settings, make_client: MakeClient
) -> None:
    on_vault = await make_client(vault_settings)
    assert (await on_vault.put(SPACES, json=BODY, headers=admin)).status == 201
    moved = run("secrets", "migrate", "--to", "db", env={**cli_env, "SPACESVC_SECRET_BACKEND": "vault"})
    assert moved.returncode == 0, moved.stderr

    # /readyz names the direction the operator took: switch this replica to db
    body = await readiness(on_vault, 503, admin)  # the detail is an admin's
    detail = body["checks"]["secret_backend"]["detail"]
    assert "is in the db backend" in detail and "set SPACESVC_SECRET_BACKEND=db here and restart" in detail

    # a new secretKey sent to that replica is refused, in the same words; the secret stays in db
    resp = await on_vault.put(SPACES, json={**BODY, "secretKey": SECRET + "-new"}, headers=admin)
    refused = await assert_envelope(resp, 503, "SERVICE_UNAVAILABLE")
    assert "is in the db backend" in refused["message"] and "SPACESVC_SECRET_BACKEND=db" in refused["hint"]
    assert await conn.fetchval("SELECT secret_backend FROM spaces_config") == "db"
    config_id = await conn.fetchval("SELECT id::text FROM spaces_config")
    assert await DbSecretBackend(DbSettings((TEST_KEY,))).read(conn, SecretLocation(config_id)) == SECRET
    # a change of the other fields is not a move, and still works there
    resp = await on_vault.patch(SPACES, json={"region": "nyc3"}, headers=admin)
    assert resp.status == 200 and (await resp.json())["config"]["secretBackend"] == "db"
