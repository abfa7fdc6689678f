"""The ``spacesvc`` command line: tokens, migrate, secrets, and one clear line for bad configuration."""

from __future__ import annotations

import os

import asyncpg
import pytest

from backends.db import DbSecretBackend, DbSettings, EncryptionKey, parse_encryption_keys
from spacesvc.settings import Settings
from spacesvc.tokens.model import TOKEN_PATTERN, hash_token
from tests.backends.contract import OWNER
from tests.support.api import BODY, SPACES, MakeClient
from tests.support.cli import clean_env, run, service_env
from tests.support.database import fresh_database
from tests.support.secrecy import SECRET, TEST_KEY, assert_hidden, keys_env


@pytest.fixture
def env(database_url: str) -> dict[str, str]:
    return service_env(database_url)


def test_help_lists_the_commands() -> None:
    result = run("--help", env=clean_env())
    assert result.returncode == 0
    for command in ("serve", "migrate", "tokens", "secrets"):
        assert command in result.stdout


async def test_tokens_create_prints_the_token_alone_on_the_last_line(env: dict, conn: asyncpg.Connection) -> None:
    result = run(
        "tokens",
        "create",
        "--name",
        "ci",
        "--role",
        "operator",
        "--scope",
        "settings:read",
        "--expires-in",
        "30d",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    assert TOKEN_PATTERN.match(token)
    row = await conn.fetchrow(
        "SELECT name, role, scopes, expires_at > now() + interval '29 days' AS ok "
        "FROM api_tokens WHERE token_hash = $1",
        hash_token(token),
    )
    assert (row["name"], row["role"], row["scopes"], row["ok"]) == ("ci", "operator", ["settings:read"], True)
    assert_hidden(result.stderr, token, where="stderr")


async def test_tokens_list_shows_tokens_but_never_their_values(env: dict) -> None:
    created = run("tokens", "create", "--name", "deploy", "--role", "admin", "--scope", "settings:write", env=env)
    token = created.stdout.strip().splitlines()[-1]
    listed = run("tokens", "list", env=env)
    assert listed.returncode == 0
    assert "deploy" in listed.stdout and "admin" in listed.stdout and "live" in listed.stdout
    assert_hidden(listed.stdout, token, where="tokens list")


async def test_tokens_revoke_by_name(env: dict, conn: asyncpg.Connection) -> None:
    run("tokens", "create", "--name", "old", "--role", "viewer", "--scope", "settings:read", env=env)
    result = run("tokens", "revoke", "old", env=env)
    assert result.returncode == 0
    assert await conn.fetchval("SELECT revoked_at IS NOT NULL FROM api_tokens WHERE name = 'old'")
    again = run("tokens", "revoke", "old", env=env)
    assert again.returncode == 2 and "no live token" in again.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--name", "x", "--role", "admin", "--scope", "settings:read", "--expires-in", "soon"), "--expires-in"),
        (("--name", "x", "--role", "admin"), "--scope"),
    ],
)
def test_tokens_create_with_bad_arguments_is_one_line(env: dict, args: tuple[str, ...], message: str) -> None:
    result = run("tokens", "create", *args, env=env)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


async def test_migrate_reports_up_to_date(env: dict) -> None:
    result = run("migrate", env=env)
    assert result.returncode == 0 and "up to date" in result.stdout


async def test_secrets_reencrypt_moves_the_secret_to_the_first_key(env: dict, conn: asyncpg.Connection) -> None:
    new_key = EncryptionKey("k2", os.urandom(32))
    await DbSecretBackend(DbSettings((TEST_KEY,))).write(conn, OWNER, SECRET)
    result = run("secrets", "reencrypt", env={**env, "SPACESVC_ENCRYPTION_KEYS": keys_env(new_key, TEST_KEY)})
    assert result.returncode == 0, result.stderr
    assert await conn.fetchval("SELECT key_id FROM secret_ciphertexts") == "k2"
    assert await DbSecretBackend(DbSettings((new_key,))).read(conn, OWNER) == SECRET
    entry = await conn.fetchrow("SELECT action, resource_type, details::text FROM audit_log")
    assert (entry["action"], entry["resource_type"]) == ("reencrypted", "secret") and '"k2"' in entry["details"]


def test_secrets_genkey_prints_a_usable_key() -> None:
    result = run("secrets", "genkey", env=clean_env())
    assert result.returncode == 0
    (key,) = parse_encryption_keys(result.stdout.strip())
    assert len(key.key) == 32


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"SPACESVC_SECRET_BACKEND": "s3"}, "SPACESVC_SECRET_BACKEND"),
        ({"SPACESVC_DATABASE_URL": "postgresql://u@127.0.0.1:1/db"}, "SPACESVC_ENCRYPTION_KEYS"),
        ({"SPACESVC_DATABASE_URL": "mysql://u@host/db"}, "SPACESVC_DATABASE_URL"),
        (
            {"SPACESVC_DATABASE_URL": "postgresql://u@h/db", "SPACESVC_ENCRYPTION_KEYS": "k1:c2hvcnQ="},
            "SPACESVC_ENCRYPTION_KEYS",
        ),
        (
            {"SPACESVC_DATABASE_URL": "postgresql://u@h/db", "SPACESVC_ENCRYPTION_KEYS": "no-colon"},
            "SPACESVC_ENCRYPTION_KEYS",
        ),
        ({"SPACESVC_LOG_LEVEL": "LOUD"}, "SPACESVC_LOG_LEVEL"),
        ({"SPACESVC_CREDENTIAL_TTL": "0s"}, "SPACESVC_CREDENTIAL_TTL"),
        ({"SPACESVC_SECRET_BACKEND": "vault"}, "VAULT_ADDR"),
        ({"SPACESVC_SECRET_BACKEND": "vault", "VAULT_ADDR": "vault:8200"}, "VAULT_ADDR"),
        ({"SPACESVC_SECRET_BACKEND": "vault", "VAULT_ADDR": "http://v:8200"}, "VAULT_TOKEN"),
        (
            {"SPACESVC_SECRET_BACKEND": "vault", "VAULT_ADDR": "http://v:8200", "SPACESVC_VAULT_ROLE_ID": "r"},
            "SPACESVC_VAULT_SECRET_ID",
        ),
        (
            {
                "SPACESVC_SECRET_BACKEND": "vault",
                "VAULT_ADDR": "http://v:8200",
                "VAULT_TOKEN": "t",
                "VAULT_CACERT": "/nonexistent.pem",
            },
            "VAULT_CACERT",
        ),
        (
            {
                "SPACESVC_SECRET_BACKEND": "vault",
                "VAULT_ADDR": "http://v:8200",
                "VAULT_TOKEN": "t",
                "SPACESVC_VAULT_MAX_VERSIONS": "\u00b2",
            },
            "SPACESVC_VAULT_MAX_VERSIONS",
        ),
        (
            {
                "SPACESVC_SECRET_BACKEND": "vault",
                "VAULT_ADDR": "http://v:8200",
                "VAULT_TOKEN": "t",
                "SPACESVC_VAULT_PATH": "/abs/",
            },
            "SPACESVC_VAULT_PATH",
        ),
    ],
)
def test_bad_configuration_stops_startup_with_one_line_naming_the_variable(variables: dict, named: str) -> None:
    result = run("serve", "--port", "1", env=clean_env(**variables))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_database_is_one_line_with_the_password_masked() -> None:
    url = "postgresql://user:hunter2-password@127.0.0.1:1/db"
    result = run(
        "migrate", env=clean_env(SPACESVC_DATABASE_URL=url, SPACESVC_ENCRYPTION_KEYS=keys_env(TEST_KEY)), timeout=60
    )
    assert result.returncode == 2
    assert "not reachable" in result.stderr
    assert "hunter2-password" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


async def test_secrets_verify_says_whether_the_stored_secret_is_readable_and_never_prints_it(
    env: dict, make_client: MakeClient, settings: Settings, admin: dict
) -> None:
    nothing = run("secrets", "verify", env=env)
    assert nothing.returncode == 1 and "nothing is configured" in nothing.stdout
    client = await make_client(settings)
    assert (await client.put(SPACES, json=BODY, headers=admin)).status == 201

    readable = run("secrets", "verify", env=env)
    assert readable.returncode == 0, readable.stderr
    assert "readable through the db backend (configuration version 1)" in readable.stdout

    other_key = keys_env(EncryptionKey(TEST_KEY.kid, os.urandom(32)))  # a restore with the wrong key
    wrong = run("secrets", "verify", env={**env, "SPACESVC_ENCRYPTION_KEYS": other_key})
    assert wrong.returncode == 1 and "not readable" in wrong.stdout and "does not decrypt" in wrong.stdout

    lost = run(
        "secrets", "verify", env={**env, "SPACESVC_ENCRYPTION_KEYS": keys_env(EncryptionKey("k9", os.urandom(32)))}
    )
    assert lost.returncode == 1 and "'k1'" in lost.stdout

    elsewhere = run("secrets", "verify", env={**env, "SPACESVC_SECRET_BACKEND": "env"})
    assert elsewhere.returncode == 1 and "in the db backend" in elsewhere.stdout
    for result in (readable, wrong, lost, elsewhere):
        assert_hidden(result.stdout + result.stderr, SECRET, where="the verify output")


async def test_environments_are_managed_from_the_command_line_and_bind_tokens(
    env: dict, conn: asyncpg.Connection
) -> None:
    created = run("environments", "create", "production", env=env)
    assert created.returncode == 0, created.stderr
    environment_id = created.stdout.splitlines()[-1]
    assert await conn.fetchval("SELECT name FROM environments WHERE id::text = $1", environment_id) == "production"
    assert run("environments", "create", "production", env=env).returncode == 2
    bad = run("environments", "create", "Not_Valid", env=env)
    assert bad.returncode == 2 and "a-z, 0-9" in bad.stderr and "Traceback" not in bad.stderr
    assert "production" in run("environments", "list", env=env).stdout

    unbound = run("tokens", "create", "--name", "w", "--role", "viewer", "--scope", "spaces:credentials", env=env)
    assert unbound.returncode == 2 and "--environment" in unbound.stderr
    bound = run(
        "tokens",
        "create",
        "--name",
        "backup-prod",
        "--role",
        "viewer",
        "--scope",
        "spaces:credentials",
        "--environment",
        "production",
        env=env,
    )
    assert bound.returncode == 0, bound.stderr
    assert "environment production" in bound.stdout
    assert (
        await conn.fetchval("SELECT environment_id::text FROM api_tokens WHERE name = 'backup-prod'") == environment_id
    )

    deleted = run("environments", "delete", "production", env=env)
    assert deleted.returncode == 0 and "revoked" in deleted.stdout
    assert await conn.fetchval("SELECT revoked_at IS NOT NULL FROM api_tokens WHERE name = 'backup-prod'")
    assert run("environments", "delete", "production", env=env).returncode == 2
    actions = await conn.fetch("SELECT resource_type, action, actor FROM audit_log ORDER BY id")
    assert [(row["resource_type"], row["action"]) for row in actions] == [
        ("environment", "created"),
        ("token", "created"),
        ("token", "revoked"),
        ("environment", "deleted"),
    ]
    assert all(row["actor"].startswith("cli:") for row in actions)


async def test_a_command_on_a_database_not_migrated_yet_says_to_migrate_first(pg_admin_url: str) -> None:
    async with fresh_database(pg_admin_url, "unmigrated") as url:
        for command in (["tokens", "list"], ["environments", "create", "prod"]):
            result = run(*command, env=service_env(url))
            assert result.returncode == 2
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and "run `spacesvc migrate` first" in lines[0], result.stderr
