"""A write that fails half-way leaves the old configuration: row and secret never disagree."""

from __future__ import annotations

import asyncpg
from aiohttp.test_utils import TestClient

from backends.db import DbSecretBackend
from spacesvc.store import get_config
from tests.conftest import SECRET, TEST_KEY
from tests.test_spaces_api import BODY, SPACES

FAIL_ROW_UPDATES = """
CREATE FUNCTION fail_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'injected failure after the secret was written'; END $$;
CREATE TRIGGER fail_update BEFORE UPDATE ON spaces_config FOR EACH ROW EXECUTE FUNCTION fail_update();
"""


async def test_a_failure_after_the_secret_is_written_keeps_the_old_row_and_secret(
    client: TestClient, admin: dict, db: asyncpg.Connection
) -> None:
    assert (await client.put(SPACES, json=BODY, headers=admin)).status == 201
    await db.execute(FAIL_ROW_UPDATES)

    resp = await client.put(SPACES, json={**BODY, "accessKey": "NEW", "secretKey": SECRET + "-new"}, headers=admin)
    assert resp.status == 500
    assert (await resp.json())["code"] == "INTERNAL"

    config = await get_config(db)
    assert config is not None
    assert (config.fields.access_key, config.version) == (BODY["accessKey"], 1)
    assert await DbSecretBackend([TEST_KEY]).read(db, config.secret_location) == SECRET


async def test_a_failed_first_creation_leaves_nothing_behind(
    client: TestClient, admin: dict, db: asyncpg.Connection
) -> None:
    await db.execute(FAIL_ROW_UPDATES)
    resp = await client.put(SPACES, json=BODY, headers=admin)
    assert resp.status == 500
    assert await db.fetchval("SELECT count(*) FROM spaces_config") == 0
    assert await db.fetchval("SELECT count(*) FROM secret_ciphertexts") == 0
