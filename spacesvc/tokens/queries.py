"""The SQL that creates, lists, revokes and verifies API tokens (only their hashes are stored)."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from spacesvc import changes
from spacesvc.audit import queries as audit
from spacesvc.audit.model import Action, Actor, Resource
from spacesvc.environments.model import Environment
from spacesvc.tokens.model import (
    CREDENTIALS_SCOPE,
    ROLES,
    SCOPES,
    InvalidToken,
    Principal,
    TokenError,
    TokenInfo,
    generate_token,
    hash_token,
)

SELECT_PRINCIPAL = """
SELECT id, name, role, scopes, environment_id::text AS environment_id, revoked_at, expires_at,
       expires_at <= now() AS expired
FROM api_tokens WHERE token_hash = $1
"""
# Every token that may authenticate now, by hash: what each process keeps in memory.
SELECT_LIVE_TOKENS = """
SELECT token_hash, id, name, role, scopes, environment_id::text AS environment_id, expires_at
FROM api_tokens WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
"""
# The columns every query that describes a token reads (see _info); never the hash.
TOKEN_COLUMNS = """id, name, role, scopes, created_at, expires_at, revoked_at,
    (SELECT e.name FROM environments e WHERE e.id = environment_id) AS environment"""
INSERT_TOKEN = f"""
INSERT INTO api_tokens (name, token_hash, role, scopes, expires_at, environment_id)
VALUES ($1, $2, $3, $4, now() + $5::interval, $6::uuid)
RETURNING {TOKEN_COLUMNS}
"""
SELECT_TOKENS = f"""
SELECT {TOKEN_COLUMNS} FROM api_tokens
ORDER BY created_at, name
"""
REVOKE_TOKEN = f"""
UPDATE api_tokens SET revoked_at = now()
WHERE revoked_at IS NULL AND (name = $1 OR id::text = $1)
RETURNING {TOKEN_COLUMNS}
"""
COUNT_TOKENS = "SELECT count(*) FROM api_tokens"


def _info(row: asyncpg.Record) -> TokenInfo:
    return TokenInfo(
        id=str(row["id"]),
        name=row["name"],
        role=row["role"],
        scopes=tuple(row["scopes"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        environment=row["environment"],
    )


async def create_token(
    conn: asyncpg.Connection,
    *,
    name: str,
    role: str,
    scopes: list[str],
    actor: Actor,
    expires_in: timedelta | None = None,
    environment: Environment | None = None,
) -> tuple[str, TokenInfo]:
    """Create a token; returns the token itself (shown once) and its stored description."""
    if not name or len(name) > 100 or not name.isprintable():
        raise TokenError("--name must be 1-100 printable characters")
    if role not in ROLES:
        raise TokenError(f"--role {role!r}: choose one of {', '.join(ROLES)}")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise TokenError(f"--scope {unknown[0]!r}: choose from {', '.join(SCOPES)}")
    if CREDENTIALS_SCOPE in scopes and environment is None:
        raise TokenError(
            f"--scope {CREDENTIALS_SCOPE} needs --environment: such a token reads one environment's credentials"
        )
    token = generate_token()
    bound = environment.id if environment else None
    async with conn.transaction():
        try:
            row = await conn.fetchrow(
                INSERT_TOKEN, name, hash_token(token), role, sorted(set(scopes)), expires_in, bound
            )
        except asyncpg.UniqueViolationError:
            raise TokenError(f"a live token named {name!r} exists already; revoke it or pick another name") from None
        info = _info(row)
        details = {"name": name, "role": role, "scopes": list(info.scopes), "environment": info.environment}
        await audit.record(conn, Action.CREATED, Resource.TOKEN, info.id, actor, details)
    return token, info


async def list_tokens(conn: asyncpg.Connection) -> list[TokenInfo]:
    return [_info(row) for row in await conn.fetch(SELECT_TOKENS)]


async def revoke_token(conn: asyncpg.Connection, name_or_id: str, actor: Actor) -> TokenInfo:
    async with conn.transaction():
        row = await conn.fetchrow(REVOKE_TOKEN, name_or_id)
        if row is None:
            raise TokenError(f"no live token named or with id {name_or_id!r}")
        info = _info(row)
        await audit.record(conn, Action.REVOKED, Resource.TOKEN, info.id, actor, {"name": info.name})
        await changes.notify(conn, changes.TOKENS)
    return info


async def count_tokens(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(COUNT_TOKENS))


async def live_tokens(conn: asyncpg.Connection) -> dict[bytes, tuple[Principal, datetime | None]]:
    """Every token that may authenticate now, by its hash: who it is and until when."""
    return {
        bytes(row["token_hash"]): (
            Principal(
                str(row["id"]),
                row["name"],
                row["role"],
                frozenset(row["scopes"]),
                row["environment_id"],
                row["expires_at"],
            ),
            row["expires_at"],
        )
        for row in await conn.fetch(SELECT_LIVE_TOKENS)
    }


async def authenticate(conn: asyncpg.Connection, token: str) -> tuple[Principal, datetime | None]:
    """Who the token is and until when it is valid; InvalidToken for an unknown, revoked or expired one."""
    row = await conn.fetchrow(SELECT_PRINCIPAL, hash_token(token))
    if row is None or row["revoked_at"] is not None or row["expired"]:
        raise InvalidToken()
    principal = Principal(
        str(row["id"]), row["name"], row["role"], frozenset(row["scopes"]), row["environment_id"], row["expires_at"]
    )
    return principal, row["expires_at"]
