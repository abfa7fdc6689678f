"""Fixtures: a real PostgreSQL, a migrated template database cloned per test, the app over real HTTP.

PostgreSQL is $SPACESVC_TEST_DATABASE_URL (a role that may CREATE DATABASE) or, when unset, a
private cluster started here (system binaries if present, else pgserver's).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from spacesvc.app import create_app
from spacesvc.logs import JsonFormatter
from spacesvc.migrate import migrate
from spacesvc.settings import EncryptionKey, Settings, VaultSettings
from spacesvc.tokens import SCOPES, create_token, parse_duration
from tests.support.openbao import OpenBao
from tests.support.postgres import LocalPostgres
from tests.support.s3 import MotoS3

TEST_KEY = EncryptionKey("k1", os.urandom(32))
SECRET = "s3cr3t-" + secrets.token_urlsafe(24)  # made per run: no secret lives in the repo


def database_url_for(admin_url: str, name: str) -> str:
    return str(URL(admin_url).with_path(f"/{name}"))


def keys_env(*keys: EncryptionKey) -> str:
    return ",".join(f"{k.kid}:{base64.b64encode(k.key).decode()}" for k in keys)


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("SPACESVC_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
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


@asynccontextmanager
async def fresh_database(admin_url: str, prefix: str, template: str | None = None) -> AsyncIterator[str]:
    """A database of its own (a clone of ``template`` if given), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    clone = f' TEMPLATE "{template}"' if template else ""
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"{clone}')
    finally:
        await admin.close()
    try:
        yield database_url_for(admin_url, name)
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


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
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the test's database, to look behind the API."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close(timeout=10)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        secret_backend="db",
        encryption_keys=(TEST_KEY,),
        db_connect_timeout=2.0,
        db_acquire_timeout=2.0,
        db_statement_timeout=3.0,
    )


MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def make_client(aiohttp_client: Callable[..., Awaitable[TestClient]]) -> MakeClient:
    """Start the app for ``settings`` on a real socket; ``setup`` may add routes first."""

    async def make(settings: Settings, setup: Callable[[web.Application], None] | None = None) -> TestClient:
        app = create_app(settings)
        if setup is not None:
            setup(app)
        return await aiohttp_client(app)

    return make


@pytest.fixture
async def client(make_client: MakeClient, settings: Settings) -> TestClient:
    return await make_client(settings)


class Tokens:
    """Creates API tokens in the test's database, as `spacesvc tokens create` does."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._count = 0

    async def create(
        self,
        role: str = "admin",
        scopes: tuple[str, ...] = SCOPES,
        name: str | None = None,
        expires_in: str | None = None,
    ) -> str:
        self._count += 1
        conn = await asyncpg.connect(self.database_url)
        try:
            token, _ = await create_token(
                conn,
                name=name or f"{role}-{self._count}",
                role=role,
                scopes=list(scopes),
                expires_in=parse_duration(expires_in) if expires_in else None,
            )
        finally:
            await conn.close()
        return token


@pytest.fixture
def tokens(database_url: str) -> Tokens:
    return Tokens(database_url)


@pytest.fixture
async def admin(tokens: Tokens) -> dict[str, str]:
    return auth(await tokens.create("admin", name="admin-token"))


@pytest.fixture
async def viewer(tokens: Tokens) -> dict[str, str]:
    return auth(await tokens.create("viewer", ("settings:read",), name="viewer-token"))


class AuthHeaders(dict[str, str]):
    """``{"Authorization": "Bearer <token>"}`` whose repr hides the token.

    pytest prints a failing test's arguments; the token must not be among what it prints.
    """

    def __repr__(self) -> str:
        return "{'Authorization': 'Bearer <hidden>'}"


def auth(token: str) -> dict[str, str]:
    return AuthHeaders({"Authorization": f"Bearer {token}"})


class ServerLog(logging.Handler):
    """Every log line the service writes during the test, formatted as in production."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


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
    return settings.with_changes(secret_backend="vault", vault=vault_config)


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """A real S3-compatible server (moto, server mode) with two buckets and two IAM users."""
    server = MotoS3(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()
