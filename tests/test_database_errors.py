"""Mistakes in SPACESVC_DATABASE_URL or in the database role's privileges, against a real
PostgreSQL that asks for passwords: one line on stderr naming the cause and the fix, exit 2,
never the password (docs/configuration.md, 'The database role')."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest

from tests.support.cli import run, service_env
from tests.support.postgres import LocalPostgres, free_port

PASSWORD = "correct-horse-battery-staple"
WRONG = "not-the-password-4242"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    """A cluster where the role ``app`` (with a password) may connect to ``appdb``, which ``postgres``
    owns: since PostgreSQL 15 such a role may not create tables in its schema public."""
    cluster = LocalPostgres.create(tmp_path_factory.mktemp("pg-passwords") / "data")
    cluster.start()

    async def prepare() -> None:
        admin = await asyncpg.connect(cluster.url)
        try:
            await admin.execute(f"CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'")
            await admin.execute("CREATE DATABASE appdb")
            await admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")  # the 15+ default, also on 13/14
        finally:
            await admin.close()

    try:
        asyncio.run(prepare())
        cluster.require_passwords()
        yield cluster
    finally:
        cluster.destroy()


def url(server: LocalPostgres, password: str, database: str = "appdb") -> str:
    return f"postgresql://app:{password}@127.0.0.1:{server.port}/{database}"


def assert_one_line_exit_2(database_url: str, *expected: str, secret: str) -> None:
    for command in (["migrate"], ["serve", "--port", str(free_port())]):
        result = run(*command, env=service_env(database_url), timeout=60)
        assert result.returncode == 2, (command, result.stderr)
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("spacesvc: SPACESVC_DATABASE_URL: PostgreSQL at 127.0.0.1:"), line
        for words in expected:
            assert words in line, line
        assert secret not in result.stderr + result.stdout


def test_a_wrong_password_is_one_line_naming_the_role_without_the_password(server: LocalPostgres) -> None:
    assert_one_line_exit_2(
        url(server, WRONG), "refused the password of role 'app'", "password authentication failed", secret=WRONG
    )


def test_a_database_that_does_not_exist_is_one_line_saying_how_to_create_it(server: LocalPostgres) -> None:
    assert_one_line_exit_2(
        url(server, PASSWORD, "nosuchdb"),
        "has no database 'nosuchdb'",
        'CREATE DATABASE "nosuchdb" OWNER "app"',
        secret=PASSWORD,
    )


def test_a_role_that_may_not_create_tables_is_one_line_naming_both_ways_to_grant_it(
    server: LocalPostgres,
) -> None:
    assert_one_line_exit_2(
        url(server, PASSWORD),
        "role 'app' lacks a privilege",
        "permission denied for schema public",
        'ALTER DATABASE "appdb" OWNER TO "app"',
        'GRANT CREATE ON SCHEMA public TO "app"',
        secret=PASSWORD,
    )


def test_the_role_owning_its_database_migrates_and_serves(server: LocalPostgres) -> None:
    """What the docs ask for is enough: the owner of the database (and so of its schema's objects)."""

    async def hand_over() -> None:
        admin = await asyncpg.connect(server.url)
        try:
            await admin.execute("CREATE DATABASE appowned OWNER app")
        finally:
            await admin.close()

    asyncio.run(hand_over())
    result = run("migrate", env=service_env(url(server, PASSWORD, "appowned")), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "applied" in result.stdout
