"""Credential deliveries are audited in batches, one commit each (docs/guarantees.md): every
delivery still has exactly one entry of its own, committed before it is answered."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from backends.db import DbSettings
from spacesvc.migrate import migrate
from spacesvc.settings import Settings
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
from tests.support.postgres import LocalPostgres
from tests.support.secrecy import TEST_KEY

CONCURRENT = 200


async def delivered_to(client: TestClient, environment: str, workload: dict[str, str]) -> tuple[int, str]:
    resp = await client.get(credentials_path(environment), headers=workload)
    await resp.read()
    return resp.status, resp.headers["X-Request-ID"]


async def test_concurrent_deliveries_each_have_exactly_one_audit_entry_with_their_own_request_id(
    client: TestClient, admin: dict, tokens: Tokens, conn: asyncpg.Connection
) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    prod = await create_environment(client, admin, "prod")
    await enable(client, admin, prod)
    workload = auth(await tokens.create("viewer", ("spaces:credentials",), environment="prod", name="batch-prod"))
    answers = await asyncio.gather(*(delivered_to(client, prod, workload) for _ in range(CONCURRENT)))
    assert {status for status, _ in answers} == {200}
    rows = await conn.fetch(
        "SELECT request_id, resource_id, actor, details->>'environment' AS environment FROM audit_log "
        "WHERE action = 'delivered' ORDER BY id"
    )
    assert sorted(row["request_id"] for row in rows) == sorted(request_id for _, request_id in answers)
    assert {(row["resource_id"], row["actor"], row["environment"]) for row in rows} == {(prod, "batch-prod", "prod")}


async def test_a_delivery_whose_environment_was_deleted_is_a_404_and_records_nothing(
    client: TestClient, admin: dict, tokens: Tokens, conn: asyncpg.Connection
) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    prod = await create_environment(client, admin, "prod")
    await enable(client, admin, prod)
    workload = auth(await tokens.create("viewer", ("spaces:credentials",), environment="prod"))
    assert (await client.get(credentials_path(prod), headers=workload)).status == 200  # in memory now
    # removed behind the service's back, as if between the check in memory and the audit entry:
    # no notification (the token, unbound by the deletion, stays in memory), memory still says
    # it is enabled
    await conn.execute(
        "ALTER TABLE api_tokens DISABLE TRIGGER USER;"
        "ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_credentials_need_an_environment"
    )
    await conn.execute("DELETE FROM spaces_environments WHERE environment_id = $1::uuid", prod)
    await conn.execute("DELETE FROM environments WHERE id = $1::uuid", prod)
    before = await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'delivered'")
    resp = await client.get(credentials_path(prod), headers=workload)
    await assert_envelope(resp, 404, "NOT_FOUND")
    assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'delivered'") == before


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalPostgres]:
    pg = LocalPostgres.create(tmp_path / "deliveries-pg")
    pg.start()
    yield pg
    pg.destroy()


async def test_a_database_outage_during_a_batch_is_503_and_no_delivery_is_answered_without_its_entry(
    cluster: LocalPostgres, make_client: MakeClient
) -> None:
    conn = await asyncpg.connect(cluster.url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    tokens = Tokens(cluster.url)
    settings = Settings(
        database_url=cluster.url,
        secrets=DbSettings((TEST_KEY,)),
        db_connect_timeout=1.0,
        db_acquire_timeout=2.0,
        db_statement_timeout=2.0,
        rate_limit=None,
    )
    client = await make_client(settings)
    admin = auth(await tokens.create("admin"))
    assert (await client.put(SPACES, json=BODY, headers=admin)).status == 201
    prod = await create_environment(client, admin, "prod")
    await enable(client, admin, prod)
    workload = auth(await tokens.create("viewer", ("spaces:credentials",), environment="prod"))
    assert (await client.get(credentials_path(prod), headers=workload)).status == 200  # secret in memory

    answers: list[tuple[int, str]] = []

    async def deliveries() -> None:
        while True:
            answers.extend(await asyncio.gather(*(delivered_to(client, prod, workload) for _ in range(50))))
            if any(status != 200 for status, _ in answers):
                return

    running = asyncio.create_task(deliveries())
    await asyncio.sleep(0.3)
    cluster.stop()  # immediate: the batch being written loses its connection
    await asyncio.wait_for(running, 30)
    cluster.start()

    statuses = {status for status, _ in answers}
    assert statuses == {200, 503}
    conn = await asyncpg.connect(cluster.url)
    try:
        recorded = {row["request_id"] for row in await conn.fetch("SELECT request_id FROM audit_log")}
    finally:
        await conn.close()
    answered = {request_id for status, request_id in answers if status == 200}
    assert answered <= recorded
