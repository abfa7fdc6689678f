"""The ``spacesvc`` command: serve, migrate, tokens, secrets; credentials (``cli_credentials``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson

import backends
from backends import BackendSettings, BackendUnavailable, create_backend
from backends.db import DbSecretBackend, new_encryption_key
from spacesvc import cli_credentials, embedded, postgres, serving
from spacesvc.audit import queries as audit
from spacesvc.audit.model import Action, Actor, Resource
from spacesvc.audit.views import MAX_AUDIT_PAGE
from spacesvc.environments import queries as environments
from spacesvc.errors import ConfigError, DomainError
from spacesvc.keys import store as key_store
from spacesvc.keys.service import Keys
from spacesvc.logs import configure_logging
from spacesvc.migrate import MigrationError, migrate
from spacesvc.outbound import Outbound
from spacesvc.settings import Settings
from spacesvc.spaces import queries, service
from spacesvc.tokens.model import ADMIN_SCOPES, ROLES, SCOPES, TokenError, parse_duration
from spacesvc.tokens.queries import count_tokens, create_token, list_tokens, revoke_token

log = logging.getLogger("spacesvc")

STARTUP_DB_WAIT_SECONDS = 15.0
# What serve says when the database has tokens already: how to make one more.
ANOTHER = (
    "to make another: spacesvc tokens create --name NAME --role admin "
    + " ".join(f"--scope {scope}" for scope in ADMIN_SCOPES)
    + " (with this SPACESVC_DATA_DIR or SPACESVC_DATABASE_URL)"
)


class CommandError(Exception):
    """A command failed in a way the user can fix; str() is printed as one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spacesvc", description="Global Spaces / S3 configuration service")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="apply pending migrations, then serve the API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--workers", default="1", help="processes serving the port: a number, or auto (one per CPU); default 1"
    )

    commands.add_parser("migrate", help="apply pending database migrations")

    tokens = commands.add_parser("tokens", help="manage API tokens").add_subparsers(dest="action", required=True)
    create = tokens.add_parser("create", help="create a token; prints it once, alone on the last line")
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--scope", action="append", default=[], choices=SCOPES, dest="scopes")
    create.add_argument("--expires-in", help="e.g. 90s, 15m, 12h, 30d")
    create.add_argument(
        "--environment", metavar="NAME_OR_ID", help="bind the token to an environment (needed by spaces:credentials)"
    )
    tokens.add_parser("list", help="list tokens (never their values)")
    revoke = tokens.add_parser("revoke", help="revoke a token at once")
    revoke.add_argument("name_or_id")

    envs = commands.add_parser("environments", help="manage environments").add_subparsers(dest="action", required=True)
    env_create = envs.add_parser("create", help="create an environment; prints its id alone on the last line")
    env_create.add_argument("name")
    envs.add_parser("list", help="list environments")
    env_delete = envs.add_parser("delete", help="delete an environment (revokes the tokens bound to it)")
    env_delete.add_argument("name_or_id")

    audit_cmd = commands.add_parser("audit", help="read the audit trail").add_subparsers(dest="action", required=True)
    audit_list = audit_cmd.add_parser("list", help="the newest entries first")
    audit_list.add_argument("--limit", type=int, default=100, help="how many entries (1-500, default 100)")

    keys_cmd = commands.add_parser("keys", help="environments' own keys (docs/keys.md)")
    key_actions = keys_cmd.add_subparsers(dest="action", required=True)
    key_actions.add_parser("list", help="every key spacesvc records (never a secret)")
    key_actions.add_parser(
        "reconcile", help="delete prefixed keys at the issuer that spacesvc has no record of; mint missing ones"
    )

    secrets_cmd = commands.add_parser("secrets", help="manage the stored secret")
    secret_actions = secrets_cmd.add_subparsers(dest="action", required=True)
    secret_actions.add_parser("reencrypt", help="db backend: re-encrypt the stored secret under the first key")
    secret_actions.add_parser("genkey", help="print a new SPACESVC_ENCRYPTION_KEYS entry (kid:base64key)")
    secret_actions.add_parser(
        "verify", help="say whether the stored secret is readable through the configured backend (exit 0 or 1)"
    )
    move = secret_actions.add_parser(
        "migrate", help="move the stored secret from the configured backend to another (then switch and restart)"
    )
    writable = [name for name, backend in backends.available().items() if backend.writable]
    move.add_argument("--to", required=True, choices=writable, dest="target")
    cli_credentials.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "credentials":  # a workload's command: it talks to a running service only
        return cli_credentials.run(args)
    try:
        settings = Settings.from_env()
        configure_logging(settings.log_level)
        if args.command == "secrets" and args.action == "genkey":
            print(new_encryption_key(f"k{secrets.token_hex(4)}"))
            return 0
        settings = embedded.resolve(settings)
        if args.command == "serve":
            serve(settings, args)
        else:
            return asyncio.run(COMMANDS[(args.command, getattr(args, "action", None))](settings, args)) or 0
    except (ConfigError, MigrationError, TokenError, CommandError, DomainError) as error:
        hint = f" ({error.hint})" if isinstance(error, DomainError) and error.hint else ""
        print(f"spacesvc: {error}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


@asynccontextmanager
async def connection(settings: Settings, wait: float = 0.0) -> AsyncIterator[asyncpg.Connection]:
    """One connection for a command; PostgreSQL unreachable for ``wait`` seconds, or refusing the URL's
    role, database or a privilege the command needs, is a CommandError."""
    try:
        conn = await _connect_with_retry(settings, wait)
        try:
            yield conn
        finally:
            await conn.close()
    except postgres.REFUSED_ERRORS as error:
        raise CommandError(postgres.refusal(error, settings.database_url or "")) from None
    except asyncpg.UndefinedTableError:
        raise CommandError(
            f"SPACESVC_DATABASE_URL: the database at {postgres.masked_dsn(settings.database_url or '')} has no "
            "spacesvc tables yet: run `spacesvc migrate` first (`spacesvc serve` applies the migrations as it starts)"
        ) from None


async def _connect_with_retry(settings: Settings, wait: float) -> asyncpg.Connection:
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        try:
            return await asyncpg.connect(settings.database_url, timeout=settings.db_connect_timeout)
        except postgres.UNAVAILABLE_ERRORS as error:
            if asyncio.get_running_loop().time() >= deadline:
                raise CommandError(
                    f"SPACESVC_DATABASE_URL: PostgreSQL at {postgres.masked_dsn(settings.database_url or '')} "
                    f"is not reachable ({type(error).__name__})"
                ) from None
            await asyncio.sleep(0.5)


async def _apply_migrations(conn: asyncpg.Connection) -> list[str]:
    applied = await migrate(conn)
    for name in applied:
        log.info("applied migration %s", name)
    return applied


async def prepare_database(settings: Settings) -> str | None:
    """Before serving: apply pending migrations; with no token yet, create the first admin token
    (returned, to be printed once)."""
    async with connection(settings, STARTUP_DB_WAIT_SECONDS) as conn:
        await _apply_migrations(conn)
        if await count_tokens(conn) == 0:
            # a replica starting at the same moment may create (and print) it first
            with contextlib.suppress(TokenError):
                token, _ = await create_token(
                    conn, name="admin", role="admin", scopes=list(ADMIN_SCOPES), actor=Actor("spacesvc serve")
                )
                return token
    return None


def serve(settings: Settings, args: argparse.Namespace) -> None:
    workers = serving.workers_for(args.workers)
    first_token = asyncio.run(prepare_database(settings))
    listen = serving.Listen(args.host, args.port)

    def announce() -> None:
        where = f", embedded PostgreSQL in {settings.embedded_pgdata}" if settings.embedded_pgdata else ""
        print(f"spacesvc {settings.secret_backend} backend{where}, listening on {listen.url}", flush=True)
        print(f"API docs: {listen.url}/api/docs", flush=True)
        if first_token is not None:
            print("First admin token (role admin, settings:read + settings:write), shown only once:", flush=True)
            print(first_token, flush=True)
        else:
            print(f"Tokens exist (the first admin token was shown once, at the first start); {ANOTHER}", flush=True)

    serving.run(settings, listen, workers, announce)


async def cmd_migrate(settings: Settings, args: argparse.Namespace) -> None:
    async with connection(settings, STARTUP_DB_WAIT_SECONDS) as conn:
        applied = await _apply_migrations(conn)
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else "; up to date"))


async def cmd_tokens_create(settings: Settings, args: argparse.Namespace) -> None:
    expires_in = parse_duration(args.expires_in) if args.expires_in else None
    if not args.scopes:
        raise TokenError(f"give at least one --scope ({', '.join(SCOPES)})")
    async with connection(settings) as conn:
        environment = await environments.find(conn, args.environment) if args.environment else None
        token, info = await create_token(
            conn,
            name=args.name,
            role=args.role,
            scopes=args.scopes,
            expires_in=expires_in,
            environment=environment,
            actor=Actor.command_line(),
        )
    expiry = info.expires_at.isoformat() if info.expires_at else "never"
    bound = f", environment {info.environment}" if info.environment else ""
    print(
        f"created token {info.name} (id {info.id}, role {info.role}, scopes {' '.join(info.scopes)}{bound}, "
        f"expires {expiry})"
    )
    print("The token is shown only once:")
    print(token)


async def cmd_tokens_list(settings: Settings, args: argparse.Namespace) -> None:
    async with connection(settings) as conn:
        tokens = await list_tokens(conn)
    print(f"{'ID':36}  {'NAME':20}  {'ROLE':8}  {'SCOPES':50}  {'ENVIRONMENT':20}  {'EXPIRES':25}  STATUS")
    for t in tokens:
        status = "revoked" if t.revoked_at else "live"
        expires = t.expires_at.isoformat(timespec="seconds") if t.expires_at else "never"
        scopes, environment = " ".join(t.scopes), t.environment or "-"
        print(f"{t.id:36}  {t.name:20}  {t.role:8}  {scopes:50}  {environment:20}  {expires:25}  {status}")


async def cmd_tokens_revoke(settings: Settings, args: argparse.Namespace) -> None:
    async with connection(settings) as conn:
        info = await revoke_token(conn, args.name_or_id, Actor.command_line())
    print(f"revoked token {info.name} (id {info.id})")


async def cmd_secrets_reencrypt(settings: Settings, args: argparse.Namespace) -> None:
    backend = create_backend(settings.secrets)
    if not isinstance(backend, DbSecretBackend):
        raise CommandError("SPACESVC_SECRET_BACKEND: reencrypt applies to the db backend only")
    async with connection(settings) as conn, conn.transaction():
        changed = await backend.reencrypt(conn)
        if changed:
            config = await queries.get_config(conn)
            details = {"keyId": backend.primary_key_id, "secrets": changed}
            owner = config.id if config else None
            await audit.record(conn, Action.REENCRYPTED, Resource.SECRET, owner, Actor.command_line(), details)
    print(f"re-encrypted {changed} secret(s) under key {backend.primary_key_id!r}")


def _backend_settings(name: str, settings: Settings) -> BackendSettings:
    """The named backend's settings, read from the environment as the service would read them."""
    chosen = backends.backend_class(name).settings_class.from_env(os.environ, embedded=settings.embedded)
    return chosen.for_embedded(settings.data_dir.resolve()) if settings.embedded else chosen


async def cmd_secrets_migrate(settings: Settings, args: argparse.Namespace) -> None:
    async with connection(settings) as conn:
        config = await queries.get_config(conn)
    if config is None:
        raise CommandError("nothing is configured: there is no secret to move")
    if config.secret_backend == args.target:
        where = f"the {args.target} backend (configuration version {config.version})"
        print(f"the secret is already in {where}; nothing to do")
        if settings.secret_backend != args.target:
            print(f"now set SPACESVC_SECRET_BACKEND={args.target} on every replica and restart spacesvc")
        else:
            print(f"keep SPACESVC_SECRET_BACKEND={args.target} on every replica")
        return
    # the source is the backend the configuration names, whatever SPACESVC_SECRET_BACKEND says
    source_settings = (
        settings.secrets
        if settings.secret_backend == config.secret_backend
        else _backend_settings(config.secret_backend, settings)
    )
    source = create_backend(source_settings)
    target = create_backend(_backend_settings(args.target, settings))
    try:
        async with connection(settings) as conn:
            moved = await service.move_secret(conn, source, target, actor=Actor.command_line())
    except service.SecretMoveError as error:
        raise CommandError(str(error)) from None
    finally:
        await source.close()
        await target.close()
    print(f"moved the secret from {source.name} to {target.name} (configuration version {moved.version})")
    print(f"now set SPACESVC_SECRET_BACKEND={target.name} and restart spacesvc")


async def cmd_secrets_verify(settings: Settings, args: argparse.Namespace) -> int:
    """Read the stored secret through the configured backend and say whether that worked; never print it."""
    backend = create_backend(settings.secrets)
    try:
        async with connection(settings) as conn:
            config = await queries.get_config(conn)
            if config is None:
                print("nothing is configured: there is no stored secretKey to verify")
                return 1
            elsewhere = service.held_elsewhere(config, backend)
            if elsewhere is not None:
                print(f"not verified: {elsewhere.message} ({elsewhere.hint})")
                return 1
            try:
                secret = await backend.read(conn, config.secret_location)
            except BackendUnavailable as error:
                print(f"not readable: {error}" + (f" ({error.hint})" if error.hint else ""))
                return 1
    finally:
        await backend.close()
    if secret is None:
        print(f"not readable: the {backend.name} backend holds no secretKey for configuration version {config.version}")
        return 1
    print(
        f"the stored secretKey is readable through the {backend.name} backend (configuration version {config.version})"
    )
    return 0


async def cmd_environments_create(settings: Settings, args: argparse.Namespace) -> None:
    async with connection(settings) as conn:
        environment = await environments.create(conn, args.name, Actor.command_line())
    print(f"created environment {environment.name}; its id:")
    print(environment.id)


async def cmd_environments_list(settings: Settings, args: argparse.Namespace) -> None:
    async with connection(settings) as conn:
        listed = await environments.list_environments(conn)
    print(f"{'ID':36}  {'NAME':30}  CREATED")
    for environment in listed:
        print(f"{environment.id:36}  {environment.name:30}  {environment.created_at.isoformat(timespec='seconds')}")


async def cmd_environments_delete(settings: Settings, args: argparse.Namespace) -> None:
    async with connection(settings) as conn:
        environment = await environments.find(conn, args.name_or_id)
        await environments.delete(conn, environment, Actor.command_line())
    print(f"deleted environment {environment.name} (id {environment.id}) and revoked the tokens bound to it")


async def cmd_audit_list(settings: Settings, args: argparse.Namespace) -> None:
    if not 1 <= args.limit <= MAX_AUDIT_PAGE:
        raise CommandError(f"--limit {args.limit}: give a number from 1 to {MAX_AUDIT_PAGE}")
    async with connection(settings) as conn:
        listed = await audit.entries(conn, limit=args.limit)
    for entry in listed:
        details = orjson.dumps(entry.details).decode()
        at = entry.at.isoformat(timespec="seconds")
        what = f"{entry.resource_type}.{entry.action}"
        print(f"{entry.id:>8}  {at}  {what:26}  {entry.resource_id or '-':36}  {entry.actor:20}  {details}")


WIDTHS = (20, 36, 9, 24, 10, 20)


async def cmd_keys_list(settings: Settings, args: argparse.Namespace) -> None:
    async with connection(settings) as conn:
        listed = await key_store.keys(conn)
    heading = ("ENVIRONMENT", "NAME", "STATE", "ACCESS KEY", "PERMISSION", "CREATED")
    print("  ".join(f"{title:{width}}" for title, width in zip(heading, WIDTHS, strict=True)) + "  BUCKETS")
    for key in listed:
        created = key.created_at.isoformat(timespec="seconds")
        row = (key.environment_name, key.name, key.state, key.access_key or "-", key.permission, created)
        columns = "  ".join(f"{value:{width}}" for value, width in zip(row, WIDTHS, strict=True))
        print(f"{columns}  {','.join(key.buckets)}")


async def cmd_keys_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    """One reconciliation, holding the lock the running services' background work takes."""
    backend = create_backend(settings.secrets)
    outbound = Outbound(settings.outbound_allow)
    await backend.start()
    try:
        async with connection(settings) as lock:
            await lock.execute("SELECT pg_advisory_lock($1)", key_store.BACKGROUND_LOCK_ID)

            @asynccontextmanager
            async def acquire() -> AsyncIterator[asyncpg.Connection]:
                async with connection(settings) as conn:
                    yield conn

            keys = Keys(acquire, backend, settings, outbound)
            async with acquire() as conn:
                if await keys.issuer(conn) is None:
                    print("no key issuer is configured: nothing to reconcile")
                    return 0
            done = await keys.reconcile()
            await keys.delete_pending()
    finally:
        await outbound.close()
        await backend.close()
    for name in done.deleted:
        print(f"deleted {name} at the issuer: spacesvc had no record of it")
    for name in done.created:
        print(f"created {name}: its environment is enabled and had no key")
    print(f"reconciled: {len(done.deleted)} deleted, {len(done.created)} created")
    return 0


COMMANDS: dict[tuple[str, str | None], Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int | None]]] = {
    ("migrate", None): cmd_migrate,
    ("tokens", "create"): cmd_tokens_create,
    ("tokens", "list"): cmd_tokens_list,
    ("tokens", "revoke"): cmd_tokens_revoke,
    ("secrets", "reencrypt"): cmd_secrets_reencrypt,
    ("secrets", "migrate"): cmd_secrets_migrate,
    ("secrets", "verify"): cmd_secrets_verify,
    ("environments", "create"): cmd_environments_create,
    ("environments", "list"): cmd_environments_list,
    ("environments", "delete"): cmd_environments_delete,
    ("audit", "list"): cmd_audit_list,
    ("keys", "list"): cmd_keys_list,
    ("keys", "reconcile"): cmd_keys_reconcile,
}
