"""A write that fails half-way leaves the old configuration: row and secret never disagree."""

from __future__ import annotations

import asyncpg
from aiohttp.test_utils import TestClient

from backends.db import DbSecretBackend, DbSettings
from spacesvc.spaces.queries import get_config
from tests.support.api import BODY, SPACES
from tests.support.faults import FAIL_ROW_UPDATES
from tests.support.secrecy import SECRET, TEST_KEY


async def test_a_failure_after_the_secret_is_written_keeps_the_old_row_and_secret(
    client: TestClient, admin: dict, conn: asyncpg.Connection
) -> None:
    assert (await client.put(SPACES, json=BODY, headers=admin)).status == 201
    await conn.execute(FAIL_ROW_UPDATES)

    resp = await client.put(SPACES, json={**BODY, "accessKey": "NEW", "secretKey": SECRET + "-new"}, headers=admin)
    assert resp.status == 500
    assert (await resp.json())["code"] == "INTERNAL"

    config = await get_config(conn)
    assert config is not None
    assert (config.fields.access_key, config.version) == (BODY["accessKey"], 1)
    assert await DbSecretBackend(DbSettings((TEST_KEY,))).read(conn, config.secret_location) == SECRET


async def test_a_failed_first_creation_leaves_nothing_behind(
    client: TestClient, admin: dict, conn: asyncpg.Connection
) -> None:
    await conn.execute(FAIL_ROW_UPDATES)
    resp = await client.put(SPACES, json=BODY, headers=admin)
    assert resp.status == 500
    assert await conn.fetchval("SELECT count(*) FROM spaces_config") == 0
    assert await conn.fetchval("SELECT count(*) FROM secret_ciphertexts") == 0
