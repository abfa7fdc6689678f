"""A write offered the configuration in memory (one statement) is the same write as the usual one:
a stale memory is caught and loses nothing; the audit entry and the notification come with it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

import asyncpg
from aiohttp.test_utils import TestClient

from backends.db import DbSecretBackend, DbSettings
from spacesvc.audit.model import Action, Actor
from spacesvc.changes import CHANNEL
from spacesvc.resources.versioned import Preconditions
from spacesvc.spaces.model import SpacesConfig, SpacesInput
from spacesvc.spaces.queries import get_config
from spacesvc.spaces.service import write_config
from tests.support.api import BODY, SPACES
from tests.support.secrecy import TEST_KEY

ACTOR = Actor("admin-token", "req_01TESTTESTTESTTESTTESTTEST")


def add_bucket(name: str) -> Callable[[SpacesConfig | None], SpacesInput]:
    def build(current: SpacesConfig | None) -> SpacesInput:
        assert current is not None
        return SpacesInput(replace(current.fields, buckets=(*current.fields.buckets, name)), None)

    return build


async def current(conn: asyncpg.Connection) -> SpacesConfig:
    config = await get_config(conn)
    assert config is not None
    return config


async def test_a_stale_memory_loses_no_update(client: TestClient, admin: dict, conn: asyncpg.Connection) -> None:
    await client.put(SPACES, json={**BODY, "buckets": ["alpha"]}, headers=admin)
    stale = await current(conn)  # what a replica had in memory ...
    moved = await client.patch(SPACES, json={"region": "fra1"}, headers=admin)  # ... when another one wrote
    assert moved.status == 200
    backend = DbSecretBackend(DbSettings((TEST_KEY,)))

    outcome = await write_config(
        conn, backend, add_bucket("bravo"), actor=ACTOR, action=Action.PATCHED, remembered=stale
    )

    assert (outcome.config.version, outcome.config.fields.region) == (3, "fra1")
    assert outcome.config.fields.buckets == ("alpha", "bravo")
    assert await current(conn) == outcome.config
    details = await conn.fetchval(
        "SELECT details::text FROM audit_log WHERE action = 'patched' ORDER BY id DESC LIMIT 1"
    )
    assert details == '{"fields": ["buckets"]}'


async def test_a_write_from_memory_is_audited_and_notified_in_its_statement(
    client: TestClient, admin: dict, conn: asyncpg.Connection, database_url: str
) -> None:
    await client.put(SPACES, json={**BODY, "buckets": ["alpha"]}, headers=admin)
    remembered = await current(conn)
    listener = await asyncpg.connect(database_url)
    notified: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(CHANNEL, lambda *args: notified.put_nowait(args[-1]))
    try:
        outcome = await write_config(
            conn,
            DbSecretBackend(DbSettings((TEST_KEY,))),
            add_bucket("bravo"),
            actor=ACTOR,
            action=Action.PATCHED,
            remembered=remembered,
        )
        notification = await asyncio.wait_for(notified.get(), 5)
    finally:
        await listener.close()
    assert (outcome.config.version, outcome.config.fields.buckets) == (2, ("alpha", "bravo"))
    assert outcome.config.updated_by == "admin-token"
    assert notification == f"config {remembered.id} 2"  # what the change left: a replica holding it keeps it
    entry = await conn.fetchrow("SELECT * FROM audit_log WHERE action = 'patched'")
    assert (entry["actor"], entry["request_id"], entry["resource_id"]) == (ACTOR.name, ACTOR.request_id, remembered.id)


async def test_an_if_match_against_a_stale_memory_is_decided_by_the_database(
    client: TestClient, admin: dict, conn: asyncpg.Connection
) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    stale = await current(conn)
    patched = await client.patch(SPACES, json={"region": "fra1"}, headers=admin)
    assert patched.headers["ETag"] == '"2"'
    outcome = await write_config(
        conn,
        DbSecretBackend(DbSettings((TEST_KEY,))),
        add_bucket("bravo"),
        actor=ACTOR,
        action=Action.PATCHED,
        preconditions=Preconditions(if_match=int(patched.headers["ETag"].strip('"'))),
        remembered=stale,
    )
    assert (outcome.config.version, outcome.config.fields.region) == (3, "fra1")
