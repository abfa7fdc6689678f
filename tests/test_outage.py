"""PostgreSQL down or hung: 503 SERVICE_UNAVAILABLE with Retry-After, never a hang or a 500;
/readyz names the database, /healthz stays 200, and the service recovers by itself."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest
from aiohttp.test_utils import TestClient

from backends.db import DbSettings
from spacesvc.audit.model import Actor
from spacesvc.migrate import migrate
from spacesvc.settings import Settings
from spacesvc.tokens.queries import create_token
from tests.support.api import BODY, SPACES, MakeClient, assert_envelope, auth, readiness
from tests.support.postgres import LocalPostgres
from tests.support.secrecy import TEST_KEY

# Not a speed target: the bound past which a request counts as hung.
HANG = 15.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalPostgres]:
    pg = LocalPostgres.create(tmp_path / "outage-pg")
    pg.start()
    yield pg
    pg.destroy()


@pytest.fixture
async def outage_app(cluster: LocalPostgres, make_client: MakeClient) -> AsyncIterator[tuple[TestClient, dict]]:
    conn = await asyncpg.connect(cluster.url)
    try:
        await migrate(conn)
        token, _ = await create_token(
            conn, name="admin", role="admin", scopes=["settings:read", "settings:write"], actor=Actor("tests")
        )
    finally:
        await conn.close()
    settings = Settings(
        database_url=cluster.url,
        secrets=DbSettings((TEST_KEY,)),
        db_connect_timeout=1.0,
        db_acquire_timeout=2.0,
        db_statement_timeout=2.0,
    )
    client = await make_client(settings)
    headers = auth(token)
    assert (await client.put(SPACES, json=BODY, headers=headers)).status == 201
    yield client, headers


def postgres_processes(cluster: LocalPostgres) -> list[psutil.Process]:
    pid = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
    postmaster = psutil.Process(pid)
    return [postmaster, *postmaster.children(recursive=True)]


async def assert_unavailable(client: TestClient, headers: dict) -> None:
    for request in (
        client.get(SPACES, headers=headers),
        client.put(SPACES, json=BODY, headers=headers),
        client.delete(SPACES, headers=headers),
    ):
        resp = await asyncio.wait_for(request, HANG)
        body = await assert_envelope(resp, 503, "SERVICE_UNAVAILABLE")
        assert int(resp.headers["Retry-After"]) > 0
        assert "hint" in body


async def assert_recovers(client: TestClient, headers: dict) -> dict:
    for _ in range(100):
        resp = await client.get(SPACES, headers=headers)
        if resp.status == 200:
            return await resp.json()
        await asyncio.sleep(0.2)
    raise AssertionError("the service did not recover after PostgreSQL came back")


async def test_database_down_is_503_and_the_service_recovers(
    outage_app: tuple[TestClient, dict], cluster: LocalPostgres
) -> None:
    client, headers = outage_app
    cluster.stop()
    await assert_unavailable(client, headers)
    ready = await asyncio.wait_for(client.get("/readyz"), HANG)
    body = await assert_envelope(ready, 503, "SERVICE_UNAVAILABLE")
    assert body["checks"]["database"]["ok"] is False
    assert (await client.get("/healthz")).status == 200

    cluster.start()
    state = await assert_recovers(client, headers)
    assert state["config"]["accessKey"] == BODY["accessKey"]
    await readiness(client, 200)


async def test_database_hung_is_503_within_the_bound_then_recovers(
    outage_app: tuple[TestClient, dict], cluster: LocalPostgres
) -> None:
    client, headers = outage_app
    processes = postgres_processes(cluster)
    for process in processes:
        os.kill(process.pid, signal.SIGSTOP)
    try:
        await assert_unavailable(client, headers)
        assert (await client.get("/healthz")).status == 200
        ready = await asyncio.wait_for(client.get("/readyz"), HANG)
        assert ready.status == 503
    finally:
        for process in processes:
            os.kill(process.pid, signal.SIGCONT)
    await assert_recovers(client, headers)


async def test_an_outage_during_authentication_is_503_not_401(
    outage_app: tuple[TestClient, dict], cluster: LocalPostgres
) -> None:
    client, headers = outage_app
    cluster.stop()
    resp = await client.get(SPACES, headers=headers)
    await assert_envelope(resp, 503, "SERVICE_UNAVAILABLE")
    cluster.start()
