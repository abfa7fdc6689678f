"""The PostgreSQL pool: its life-cycle, and the one place where database failures become ``Unavailable``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import asyncpg
from aiohttp import web
from yarl import URL

from spacesvc.errors import Unavailable
from spacesvc.settings import SETTINGS, Settings

log = logging.getLogger("spacesvc.postgres")

POOL: web.AppKey[asyncpg.Pool] = web.AppKey("pool")
# Waits for a pooled connection, in the order they asked (``acquire``).
POOL_TURNS: web.AppKey[asyncio.Semaphore] = web.AppKey("pool_turns")

# Shutdown never waits longer than this for connections still busy.
POOL_CLOSE_SECONDS = 10.0

# What PostgreSQL being down, restarting, overloaded or cut off looks like from asyncpg.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,
    asyncpg.OperatorInterventionError,
    asyncpg.QueryCanceledError,
    asyncpg.InsufficientResourcesError,
)


def masked_dsn(dsn: str) -> str:
    """The DSN with its password hidden, for log lines: in the user-info and in the query
    (libpq's ``?password=``, which asyncpg takes too)."""
    url = URL(dsn)
    if url.password:
        url = url.with_password("***")
    if "password" in url.query:
        url = url.update_query(password="***")
    return str(url)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Return connections to the pool without asyncpg's reset query (one round trip per release).

    asyncpg still rolls back a transaction left open. The service keeps no session state on
    pooled connections: no SET, no session advisory locks (only transaction-scoped ones), no
    LISTEN, no cursors; the migration runner's session lock uses a connection of its own.
    """


async def create_pool(settings: Settings) -> asyncpg.Pool:
    assert settings.database_url is not None, "resolve the embedded database first"
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=0,
        max_size=settings.db_pool_max_size,
        timeout=settings.db_connect_timeout,
        command_timeout=settings.db_statement_timeout,
        server_settings={"application_name": "spacesvc"},
        reset=_keep_session,
    )
    assert pool is not None
    return pool


async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
    """The app's pool: opened when the app starts, closed (within a bound) when it stops."""
    settings = app[SETTINGS]
    assert settings.database_url is not None
    log.info("connecting to PostgreSQL at %s", masked_dsn(settings.database_url))
    pool = await create_pool(settings)
    app[POOL] = pool
    app[POOL_TURNS] = asyncio.Semaphore(settings.db_pool_max_size)
    try:
        yield
    finally:
        try:
            async with asyncio.timeout(POOL_CLOSE_SECONDS):
                await pool.close()
        except TimeoutError:
            log.warning("PostgreSQL connections did not close within %ss; terminating them", POOL_CLOSE_SECONDS)
            pool.terminate()


@asynccontextmanager
async def connection(pool: asyncpg.Pool, turns: asyncio.Semaphore, timeout: float) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection; PostgreSQL failing or too slow raises Unavailable (503).

    Requests wait for a connection in the order they asked (``turns``, a FIFO semaphore as large
    as the pool): asyncpg's own queue lets a newcomer take a connection just released before the
    waiter it was meant for, which under load starved some requests for seconds (README.md,
    Benchmarks).
    """
    try:
        async with asyncio.timeout(timeout):
            await turns.acquire()
    except TimeoutError as error:
        log.warning("database unavailable: no connection free within %gs", timeout)
        raise Unavailable("database", "The database is not reachable right now.") from error
    try:
        async with pool.acquire(timeout=timeout) as conn:
            yield conn
    except UNAVAILABLE_ERRORS as error:
        log.warning("database unavailable: %s", type(error).__name__)
        raise Unavailable("database", "The database is not reachable right now.") from error
    finally:
        turns.release()


def acquire(app: web.Application) -> AbstractAsyncContextManager[asyncpg.Connection]:
    """A connection from the app's pool, within the configured acquire bound."""
    return connection(app[POOL], app[POOL_TURNS], app[SETTINGS].db_acquire_timeout)


# What a wrong URL or a role without the privileges the service needs looks like from asyncpg:
# not an outage to wait out, but a mistake to fix (see ``refusal``).
REFUSED_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.InvalidAuthorizationSpecificationError,  # wrong password, unknown role, pg_hba.conf
    asyncpg.InvalidCatalogNameError,  # no such database
    asyncpg.InsufficientPrivilegeError,  # e.g. no CREATE on schema public (PostgreSQL 15+)
)


def refusal(error: BaseException, dsn: str) -> str:
    """One line for a REFUSED_ERRORS error: the cause and what to do, never the password."""
    url = URL(dsn)
    role, database = url.user or "the role", url.path.lstrip("/") or url.user or "the database"
    where = f"SPACESVC_DATABASE_URL: PostgreSQL at {url.host or 'the socket'}:{url.port or 5432}"
    said = str(getattr(error, "message", None) or error)  # the server's words: they never hold a password
    if isinstance(error, asyncpg.InvalidPasswordError):
        return (
            f"{where} refused the password of role {role!r} ({said}); put the role's password in the URL "
            "(postgresql://user:password@host:port/database, special characters percent-encoded)"
        )
    if isinstance(error, asyncpg.InvalidAuthorizationSpecificationError):
        return (
            f"{where} refused the connection ({said}); check the URL's role and database, and PostgreSQL's "
            "pg_hba.conf; a server that requires TLS needs ?sslmode=require (or verify-full) in the URL "
            "(docs/configuration.md, 'The database role')"
        )
    if isinstance(error, asyncpg.InvalidCatalogNameError):
        return (
            f"{where} has no database {database!r} ({said}); create it, owned by the service's role "
            f'(CREATE DATABASE "{database}" OWNER "{role}"), or name an existing one in the URL'
        )
    return (
        f"{where}: role {role!r} lacks a privilege the service needs in database {database!r} ({said}); "
        f'make it the database\'s owner (ALTER DATABASE "{database}" OWNER TO "{role}") or grant it CREATE on '
        f"the schema (GRANT CREATE ON SCHEMA public TO \"{role}\") (docs/configuration.md, 'The database role')"
    )
