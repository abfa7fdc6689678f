"""The migration runner: ordered, transactional, locked, checksummed."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from backends.db import DbSettings
from spacesvc.migrate import COMMENT_EDITS, MigrationError, load_migrations, migrate, migration_state
from spacesvc.settings import Settings
from tests.support.api import MakeClient
from tests.support.secrecy import TEST_KEY


async def test_migrate_applies_every_file_in_order_once(empty_database_url: str) -> None:
    conn = await asyncpg.connect(empty_database_url)
    try:
        applied = await migrate(conn)
        assert applied == [f"{m.version:04d}_{m.name}" for m in load_migrations()]
        assert await migrate(conn) == []
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
        assert [(r["version"], r["checksum"]) for r in rows] == [(m.version, m.checksum) for m in load_migrations()]
        assert await conn.fetchval("SELECT to_regclass('spaces_config') IS NOT NULL")
    finally:
        await conn.close()


async def test_two_replicas_migrating_together_are_safe(empty_database_url: str) -> None:
    first, second = await asyncpg.connect(empty_database_url), await asyncpg.connect(empty_database_url)
    try:
        results = await asyncio.gather(migrate(first), migrate(second))
        assert sorted(len(r) for r in results) == [0, len(load_migrations())]
        assert await first.fetchval("SELECT count(*) FROM schema_migrations") == len(load_migrations())
    finally:
        await first.close()
        await second.close()


async def test_an_edited_applied_migration_is_refused(conn: asyncpg.Connection) -> None:
    await conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(conn)


async def test_a_migration_applied_before_an_edit_of_its_comments_alone_is_accepted(conn: asyncpg.Connection) -> None:
    for version, former in COMMENT_EDITS.items():
        await conn.execute("UPDATE schema_migrations SET checksum = $1 WHERE version = $2", min(former), version)
    assert await migrate(conn) == []
    assert await migration_state(conn) == (True, "all migrations applied")


async def test_an_unknown_migration_among_the_known_ones_is_refused(conn: asyncpg.Connection) -> None:
    await conn.execute("DELETE FROM schema_migrations WHERE version = 2")
    await conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (2, 'other_branch', 'x')")
    with pytest.raises(MigrationError, match="does not know"):
        await migrate(conn)


async def test_migrations_of_a_newer_release_leave_this_one_ready(
    make_client: MakeClient, database_url: str, conn: asyncpg.Connection
) -> None:
    """A rolling update: the first new replica migrated; the old ones keep serving and say so."""
    await conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'future', 'x')")
    assert await migrate(conn) == []  # an old replica restarting during the rollout starts
    client: TestClient = await make_client(Settings(database_url=database_url, secrets=DbSettings((TEST_KEY,))))
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert (await resp.json())["checks"]["migrations"] == {
        "ok": True,
        "detail": "all migrations applied; 9999_future from a newer release too",
    }


async def test_readyz_fails_while_migrations_are_pending(make_client: MakeClient, empty_database_url: str) -> None:
    client: TestClient = await make_client(Settings(database_url=empty_database_url, secrets=DbSettings((TEST_KEY,))))
    resp = await client.get("/readyz")
    assert resp.status == 503
    body = await resp.json()
    assert body["code"] == "SERVICE_UNAVAILABLE"
    assert body["checks"]["migrations"]["ok"] is False
    assert "pending" in body["checks"]["migrations"]["detail"]
    assert body["checks"]["database"]["ok"] is True
