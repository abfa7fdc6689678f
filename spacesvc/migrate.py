"""The migration runner: numbered plain-SQL files from the ``migrations`` package.

Applied under a session advisory lock, so replicas starting together take turns; each file and
its bookkeeping row commit in one transaction; a checksum refuses an edited migration.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

# An arbitrary constant that names "spacesvc migrations" among advisory locks.
MIGRATION_LOCK_ID = 0x5BACE5_0001
FILENAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

CREATE_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
SELECT_APPLIED = "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
INSERT_APPLIED = "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)"
BOOKKEEPING_EXISTS = "SELECT to_regclass('schema_migrations') IS NOT NULL"

# The checksums an applied migration had before an edit of its comments alone: a database that
# applied the earlier text holds the same schema and is not refused (docs/configuration.md).
COMMENT_EDITS: dict[int, frozenset[str]] = {
    3: frozenset({"41008527a785419adc806053afa2f7d5b65b3b01406bf089c4152f4227d7af39"}),
}


class MigrationError(Exception):
    """The database's migrations disagree with the code's; str() is one clear line."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@functools.cache
def load_migrations() -> tuple[Migration, ...]:
    found = []
    for entry in resources.files("migrations").iterdir():
        match = FILENAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a number")
    return tuple(found)


def pending(applied: dict[int, tuple[str, str]], migrations: tuple[Migration, ...]) -> list[Migration]:
    """The migrations still to apply; raises if what is applied disagrees with the files.

    Migrations numbered after the newest this release knows come from a newer release (a rolling
    update, or a rollback): they are accepted, since every migration keeps working for the release
    before it (docs/configuration.md). An unknown one among the known numbers is not.
    """
    known = {m.version: m for m in migrations}
    newest = max(known, default=0)
    for version, (name, checksum) in applied.items():
        migration = known.get(version)
        if migration is None and version > newest:
            continue
        if migration is None or migration.name != name:
            raise MigrationError(
                f"the database has migration {version:04d}_{name}, which this version of "
                "spacesvc does not know, among the ones it does (a migration from another branch?)"
            )
        if checksum != migration.checksum and checksum not in COMMENT_EDITS.get(version, ()):
            raise MigrationError(
                f"migration {version:04d}_{name}.sql was changed after it was applied "
                "(checksum mismatch); add a new migration instead of editing an applied one"
            )
    return [m for m in migrations if m.version not in applied]


def newer(applied: dict[int, tuple[str, str]], migrations: tuple[Migration, ...]) -> list[str]:
    """The applied migrations from a newer release than this one."""
    newest = max((m.version for m in migrations), default=0)
    return [f"{version:04d}_{name}" for version, (name, _) in sorted(applied.items()) if version > newest]


async def applied_migrations(conn: asyncpg.Connection) -> dict[int, tuple[str, str]]:
    if not await conn.fetchval(BOOKKEEPING_EXISTS):
        return {}
    return {r["version"]: (r["name"], r["checksum"]) for r in await conn.fetch(SELECT_APPLIED)}


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply every pending migration; returns the names applied."""
    migrations = load_migrations()
    done: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute(CREATE_BOOKKEEPING)
        for migration in pending(await applied_migrations(conn), migrations):
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(INSERT_APPLIED, migration.version, migration.name, migration.checksum)
            done.append(f"{migration.version:04d}_{migration.name}")
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return done


async def migration_state(conn: asyncpg.Connection) -> tuple[bool, str]:
    """Whether the database is fully migrated, and what /readyz says of it (one read of the bookkeeping)."""
    migrations = load_migrations()
    applied = await applied_migrations(conn)
    try:
        todo = pending(applied, migrations)
    except MigrationError as error:
        return False, str(error)
    if todo:
        return False, f"{len(todo)} migration(s) pending: run `spacesvc migrate`"
    ahead = newer(applied, migrations)
    if ahead:
        return True, f"all migrations applied; {', '.join(ahead)} from a newer release too"
    return True, "all migrations applied"
