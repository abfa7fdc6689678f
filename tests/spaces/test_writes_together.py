"""Writes that arrive together are written together (docs/guarantees.md, "Writes"): each is
answered as if it had run alone after the one before it, with a version of its own and an audit
entry of its own, and at most one secret, the last, reaches the secret backend."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from backends.db import DbSecretBackend, DbSettings
from backends.vault import VaultSecretBackend, VaultSettings
from spacesvc.audit.model import Action, Actor
from spacesvc.changes import CHANNEL
from spacesvc.errors import PreconditionFailed, Unavailable
from spacesvc.resources.versioned import Preconditions
from spacesvc.settings import Settings
from spacesvc.spaces import resource
from spacesvc.spaces.model import SpacesConfig, SpacesInput, WriteOutcome
from spacesvc.spaces.queries import get_config
from spacesvc.spaces.service import ConfigWrite, write_configs
from tests.support.api import BODY, SPACES, MakeClient
from tests.support.openbao import OpenBao
from tests.support.secrecy import SECRET, TEST_KEY

ACTOR = Actor("admin-token", "req_01TESTTESTTESTTESTTESTTEST")


@pytest.fixture
async def vault_client(make_client: MakeClient, vault_settings: Settings) -> TestClient:
    return await make_client(vault_settings)


def put(secret: str | None = None, *, access_key: str = "DO00EXAMPLEKEY", if_match: int | None = None) -> ConfigWrite:
    def build(current: SpacesConfig | None) -> SpacesInput:
        assert current is not None
        return SpacesInput(replace(current.fields, access_key=access_key), secret)

    return ConfigWrite(build, ACTOR, Action.REPLACED, Preconditions(if_match=if_match))


def add_bucket(name: str) -> ConfigWrite:
    def build(current: SpacesConfig | None) -> SpacesInput:
        assert current is not None
        return SpacesInput(replace(current.fields, buckets=(*current.fields.buckets, name)), None)

    return ConfigWrite(build, ACTOR, Action.PATCHED)


async def stored(conn: asyncpg.Connection) -> SpacesConfig:
    config = await get_config(conn)
    assert config is not None
    return config


async def audited(conn: asyncpg.Connection, since: int) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT action, details::text AS details FROM audit_log WHERE id > $1 AND resource_type = 'spaces_config' "
        "ORDER BY id",
        since,
    )
    return [(row["action"], row["details"]) for row in rows]


async def test_writes_together_each_answer_as_if_alone_in_order(
    client: TestClient, admin: dict, conn: asyncpg.Connection, database_url: str
) -> None:
    assert (await client.put(SPACES, json={**BODY, "buckets": []}, headers=admin)).status == 201
    backend = DbSecretBackend(DbSettings((TEST_KEY,)))
    last_entry = await conn.fetchval("SELECT max(id) FROM audit_log")
    listener = await asyncpg.connect(database_url)
    notified: list[str] = []
    await listener.add_listener(CHANNEL, lambda *args: notified.append(args[-1]))
    try:
        outcomes = await write_configs(
            conn,
            backend,
            [
                add_bucket("alpha"),  # version 2
                put(if_match=1),  # stale by then: 412, and nothing of it written
                put(SECRET + "-b", access_key="KEY-B"),  # version 3
                put(SECRET + "-b", access_key="KEY-B"),  # the same again: unchanged, still version 3
                put(SECRET + "-c", if_match=3),  # version 4, its If-Match as of the write before
            ],
        )
        await asyncio.sleep(0.2)  # the notification is delivered at commit
    finally:
        await listener.close()

    first, refused, second, unchanged, last = outcomes
    assert isinstance(refused, PreconditionFailed)
    assert isinstance(first, WriteOutcome) and isinstance(second, WriteOutcome)
    assert isinstance(unchanged, WriteOutcome) and isinstance(last, WriteOutcome)
    assert [first.config.version, second.config.version, unchanged.config.version, last.config.version] == [2, 3, 3, 4]
    assert (first.changed, second.changed, unchanged.changed, last.changed) == (True, True, False, True)
    assert first.config.fields.buckets == ("alpha",) and second.config.fields.access_key == "KEY-B"
    now = await stored(conn)
    assert now == last.config  # the last write is what is stored, as it was answered
    assert (now.fields.access_key, now.fields.buckets) == ("DO00EXAMPLEKEY", ("alpha",))
    assert await backend.read(conn, now.secret_location) == SECRET + "-c"
    assert await audited(conn, last_entry) == [
        ("patched", '{"fields": ["buckets"]}'),
        ("replaced", '{"fields": ["accessKey", "secretKey"]}'),
        ("replaced", '{"fields": ["accessKey", "secretKey"]}'),
    ]
    assert notified == [f"{resource.SPACES.name} {now.id} 4"]  # one change, to the last version


async def test_concurrent_puts_of_new_secrets_on_vault_lose_none_and_store_the_last(
    vault_client: TestClient, vault_config: VaultSettings, admin: dict, openbao: OpenBao, conn: asyncpg.Connection
) -> None:
    client = vault_client
    assert (await client.put(SPACES, json=BODY, headers=admin)).status == 201
    vault_version = await conn.fetchval("SELECT secret_version FROM spaces_config")

    async def put_secret(n: int) -> tuple[int, str]:
        secret = f"{SECRET}-{n:02d}"
        resp = await client.put(SPACES, json={**BODY, "secretKey": secret}, headers=admin)
        assert resp.status == 200
        return (await resp.json())["config"]["version"], secret

    answered = dict(await asyncio.gather(*(put_secret(n) for n in range(30))))

    assert sorted(answered) == list(range(2, 32))  # a version each, none lost
    resp = await client.get(SPACES, headers=admin)
    assert (await resp.json())["config"]["version"] == 31
    now = await stored(conn)
    backend = VaultSecretBackend(vault_config)
    try:
        assert await backend.read(conn, now.secret_location) == answered[31]  # the last one answered
    finally:
        await backend.close()
    replaced = await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'replaced'")
    assert replaced == 30
    metadata = openbao.admin().secrets.kv.v2.read_secret_metadata(path=vault_config.path, mount_point="secret")
    # writes that went together stored one Vault version: fewer versions than writes
    assert vault_version < metadata["data"]["current_version"] < vault_version + 30


async def test_a_secret_vault_refuses_fails_only_its_own_write(
    vault_client: TestClient, vault_config: VaultSettings, admin: dict, openbao: OpenBao, conn: asyncpg.Connection
) -> None:
    client = vault_client
    assert (await client.put(SPACES, json={**BODY, "buckets": []}, headers=admin)).status == 201
    path = vault_config.path
    openbao.write_policy(
        "spacesvc-read-only",
        f'path "secret/data/{path}" {{ capabilities = ["read"] }}\n'
        f'path "secret/metadata/{path}" {{ capabilities = ["read"] }}',
    )
    read_only = VaultSecretBackend(replace(vault_config, token=openbao.create_token(["spacesvc-read-only"], ttl="1h")))
    try:
        outcomes = await write_configs(
            conn, read_only, [add_bucket("alpha"), put(SECRET + "-refused"), add_bucket("bravo")]
        )
        now = await stored(conn)
        assert await read_only.read(conn, now.secret_location) == SECRET
    finally:
        await read_only.close()

    first, refused, last = outcomes
    assert isinstance(refused, Unavailable) and "denied permission" in str(refused)
    assert isinstance(first, WriteOutcome) and isinstance(last, WriteOutcome)
    assert (first.config.version, last.config.version) == (2, 3)
    assert (now.version, now.fields.buckets) == (3, ("alpha", "bravo"))
