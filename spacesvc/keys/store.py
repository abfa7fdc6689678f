"""The issuer's and the keys' SQL (docs/keys.md). Changes that alter what a workload is delivered
take the configuration's write lock, bump its version and notify, like enablement does."""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Any, cast

import asyncpg

from backends import SecretBackend
from spacesvc import changes
from spacesvc.audit.model import Action, Actor
from spacesvc.errors import Conflict, InvalidInput
from spacesvc.keys.issuers import Permission
from spacesvc.keys.model import DELETING, MINTING, EnvironmentKey, Grants, IssuerConfig, IssuerInput, no_issuer
from spacesvc.keys.resource import ISSUER, ISSUER_COLUMNS, issuer_from
from spacesvc.resources.versioned import Preconditions
from spacesvc.spaces.resource import SPACES

# Held (session-level) by the one process that runs the keys' background work at a time.
BACKGROUND_LOCK_ID = 0x5BACE5_0021

INSERT_ISSUER = f"""
INSERT INTO key_issuer (type, access_key, region, secret_backend, updated_by) VALUES ($1, $2, $3, $4, $5)
RETURNING {ISSUER_COLUMNS}
"""
UPDATE_ISSUER = f"""
UPDATE key_issuer SET type = $1, access_key = $2, region = $3, secret_backend = $4, secret_version = $5,
    version = $6, updated_at = now(), updated_by = $7
RETURNING {ISSUER_COLUMNS}
"""
MARK_ISSUER_DELETED = f"""
UPDATE key_issuer SET deleted = true, version = version + 1, updated_at = now()
RETURNING {ISSUER_COLUMNS}
"""
REMOVE_ISSUER = "DELETE FROM key_issuer"


def key_columns(table: str) -> str:
    """The columns every query that returns a key reads (see ``key_from``), from ``table``."""
    return f"""{table}.id::text AS id, {table}.environment_id::text AS environment_id, {table}.environment_name,
{table}.name, {table}.state, {table}.access_key, {table}.buckets, {table}.permission, {table}.secret_version,
{table}.created_at, {table}.retire_after, {table}.version"""


KEY_COLUMNS = key_columns("environment_keys")
NEXT_COUNTER = "SELECT nextval('environment_key_counter')"
INSERT_MINTING = f"""
INSERT INTO environment_keys (environment_id, environment_name, name, state, buckets, permission)
VALUES ($1::uuid, $2, $3, '{MINTING}', $4, $5)
RETURNING {KEY_COLUMNS}
"""
LOCK_MINTING = f"SELECT {KEY_COLUMNS} FROM environment_keys WHERE id = $1::uuid AND state = '{MINTING}' FOR UPDATE"
DROP_KEY = "DELETE FROM environment_keys WHERE id = $1::uuid"
ACTIVATE = f"""
UPDATE environment_keys SET state = 'active', access_key = $2, secret_backend = $3, secret_version = $4,
    created_at = $5, version = $6
WHERE id = $1::uuid
RETURNING {KEY_COLUMNS}
"""
# The active key of an environment becomes the retiring one; a key retiring before it (at most
# two keys per environment) goes to deletion at once.
RETIRE_ACTIVE = f"""
WITH gone AS (
    UPDATE environment_keys SET state = '{DELETING}'
    WHERE environment_id = $1::uuid AND state = 'retiring'
    RETURNING id
)
UPDATE environment_keys SET state = 'retiring', retire_after = now() + make_interval(secs => $2)
WHERE environment_id = $1::uuid AND state = 'active' AND id <> $3::uuid
RETURNING {KEY_COLUMNS}
"""
SELECT_KEYS = f"SELECT {KEY_COLUMNS} FROM environment_keys ORDER BY environment_name, created_at"
SELECT_ENVIRONMENT_KEYS = f"""
SELECT {KEY_COLUMNS} FROM environment_keys WHERE environment_id = $1::uuid AND state IN ('active', 'retiring')
ORDER BY created_at
"""
# What a delivery needs in one round trip: whether an issuer is configured, and the environment's
# active key.
SELECT_ACTIVE_KEY = f"SELECT {KEY_COLUMNS} FROM environment_keys WHERE environment_id = $1::uuid AND state = 'active'"
SELECT_DELIVERED = f"""
SELECT EXISTS (SELECT FROM key_issuer WHERE NOT deleted) AS issuer, k.*
FROM (SELECT 1) one
LEFT JOIN LATERAL (
    SELECT {KEY_COLUMNS} FROM environment_keys WHERE environment_id = $1::uuid AND state = 'active'
) k ON true
"""
SELECT_ACTIVE = f"SELECT {KEY_COLUMNS} FROM environment_keys WHERE state = 'active'"
SELECT_DELETING = f"SELECT {KEY_COLUMNS} FROM environment_keys WHERE state = '{DELETING}' ORDER BY created_at"
SEND_ALL_TO_DELETION = f"UPDATE environment_keys SET state = '{DELETING}' WHERE state <> '{DELETING}'"
COUNT_KEYS = "SELECT count(*) FROM environment_keys"
COUNT_DELIVERED_KEYS = "SELECT count(*) FROM environment_keys WHERE state <> 'minting'"
FAILED_ATTEMPT = "UPDATE environment_keys SET attempts = attempts + 1 WHERE id = $1::uuid"
# Retiring keys whose overlap ended, or whose every bound live token has fetched the new key.
RETIRE_DUE = f"""
UPDATE environment_keys old SET state = '{DELETING}'
WHERE old.state = 'retiring' AND (
    old.retire_after <= now()
    OR NOT EXISTS (
        SELECT FROM api_tokens t
        WHERE t.environment_id = old.environment_id AND t.revoked_at IS NULL
          AND (t.expires_at IS NULL OR t.expires_at > now()) AND 'spaces:credentials' = ANY (t.scopes)
          AND NOT EXISTS (
              SELECT FROM audit_log a, environment_keys new
              WHERE new.environment_id = old.environment_id AND new.state = 'active'
                AND a.action = 'delivered' AND a.resource_type = 'credentials'
                AND a.resource_id = old.environment_id::text AND a.details ->> 'token' = t.name
                AND (a.details ->> 'version')::int >= new.version
          )
    )
)
RETURNING {key_columns("old")}
"""
SELECT_DUE_FOR_ROTATION = f"""
SELECT {KEY_COLUMNS} FROM environment_keys
WHERE state = 'active' AND created_at <= now() - make_interval(secs => $1)
"""
# Active keys whose grants are no longer the environment's (the configuration's buckets changed
# under an environment granted all of them, or its grants were changed in the database).
SELECT_OUTDATED_GRANTS = f"""
SELECT {key_columns("k")}
FROM environment_keys k
JOIN spaces_environments se ON se.environment_id = k.environment_id
JOIN spaces_config c ON c.id = se.config_id
WHERE k.state = 'active' AND se.enabled
  AND (coalesce(se.buckets, c.buckets) IS DISTINCT FROM k.buckets OR se.permission <> k.permission)
"""
# Minting rows older than this were left by a crash (a mint finishes within the issuer's deadline).
STALE_MINTING = f"""
DELETE FROM environment_keys WHERE state = '{MINTING}' AND created_at < now() - make_interval(secs => $1)
RETURNING {KEY_COLUMNS}
"""
SELECT_MINTING_NAMES = f"SELECT name FROM environment_keys WHERE state = '{MINTING}'"
SELECT_KNOWN_ACCESS_KEYS = "SELECT access_key FROM environment_keys WHERE access_key IS NOT NULL"

GRANT_COLUMNS = "se.enabled, se.buckets, se.permission"
SELECT_GRANTS = """
SELECT e.id::text AS id, e.name, coalesce(se.enabled, false) AS enabled, se.id IS NOT NULL AS recorded, se.buckets,
       coalesce(se.permission, 'readwrite') AS permission
FROM environments e
LEFT JOIN spaces_config c ON true
LEFT JOIN spaces_environments se ON se.environment_id = e.id AND se.config_id = c.id
"""
SELECT_ALL_GRANTS = SELECT_GRANTS + " ORDER BY e.name"
SELECT_ONE_GRANTS = SELECT_GRANTS + " WHERE e.id = $1::uuid"
SELECT_ENABLED_WITHOUT_KEY = (
    SELECT_GRANTS
    + """ WHERE se.enabled AND NOT EXISTS (
    SELECT FROM environment_keys k WHERE k.environment_id = e.id AND k.state IN ('minting', 'active')
) ORDER BY e.name"""
)
UPSERT_GRANTS = """
INSERT INTO spaces_environments (config_id, environment_id, enabled, buckets, permission)
VALUES ($1::uuid, $2::uuid, $3, $4, $5)
ON CONFLICT (config_id, environment_id)
DO UPDATE SET enabled = EXCLUDED.enabled, buckets = EXCLUDED.buckets, permission = EXCLUDED.permission
"""
SELECT_CONFIG = "SELECT id::text AS id, buckets FROM spaces_config"
BUMP_CONFIG_VERSION = f"""
UPDATE spaces_config SET version = version + 1, updated_at = now(), updated_by = $1
RETURNING version, {changes.at_sql(SPACES.name, "spaces_config")} AS notification
"""


def key_from(row: asyncpg.Record | dict[str, Any]) -> EnvironmentKey:
    data = dict(row)
    return EnvironmentKey(
        id=data["id"],
        environment_id=data["environment_id"],
        environment_name=data["environment_name"],
        name=data["name"],
        state=data["state"],
        access_key=data["access_key"],
        buckets=tuple(data["buckets"]),
        permission=cast(Permission, data["permission"]),
        secret_version=data["secret_version"],
        created_at=data["created_at"],
        retire_after=data["retire_after"],
        version=data["version"],
    )


def grants_from(row: asyncpg.Record) -> Grants:
    buckets = row["buckets"]
    return Grants(None if buckets is None else tuple(buckets), cast(Permission, row["permission"]))


async def lock_for_write(conn: asyncpg.Connection) -> None:
    """Inside a transaction: the configuration's write lock, which enablement also takes."""
    await conn.execute(SPACES.lock_sql)


async def bump_config(conn: asyncpg.Connection, actor: str) -> int | None:
    """A new version of the configuration (what workloads are delivered changed), notified."""
    row = await conn.fetchrow(BUMP_CONFIG_VERSION, actor)
    if row is None:
        return None
    await changes.notify(conn, row["notification"])
    return int(row["version"])


async def keys(conn: asyncpg.Connection) -> list[EnvironmentKey]:
    return [key_from(row) for row in await conn.fetch(SELECT_KEYS)]


async def environment_keys(conn: asyncpg.Connection, environment_id: str) -> list[EnvironmentKey]:
    return [key_from(row) for row in await conn.fetch(SELECT_ENVIRONMENT_KEYS, environment_id)]


async def active_key(conn: asyncpg.Connection, environment_id: str) -> EnvironmentKey | None:
    row = await conn.fetchrow(SELECT_ACTIVE_KEY, environment_id)
    return key_from(row) if row is not None else None


async def delivered(conn: asyncpg.Connection, environment_id: str) -> tuple[bool, EnvironmentKey | None]:
    """Whether an issuer is configured, and the environment's active key (if any)."""
    row = await conn.fetchrow(SELECT_DELIVERED, environment_id)
    data = dict(row)
    issuer = bool(data.pop("issuer"))
    return issuer, key_from(data) if data["id"] is not None else None


def timestamp_or_none(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds").replace("+00:00", "Z")


async def _store_issuer(
    conn: asyncpg.Connection,
    backend: SecretBackend,
    wanted: IssuerInput,
    secret_version: int | None,
    version: int,
    actor: Actor,
) -> IssuerConfig:
    """The issuer's row as ``wanted`` at ``version``, its secret at ``secret_version`` in ``backend``."""
    row = await conn.fetchrow(
        UPDATE_ISSUER, wanted.type, wanted.access_key, wanted.region, backend.name, secret_version, version, actor.name
    )
    return issuer_from(row)


async def write_issuer(
    conn: asyncpg.Connection,
    backend: SecretBackend,
    wanted: IssuerInput,
    conditions: Preconditions,
    actor: Actor,
) -> tuple[IssuerConfig, bool, bool]:
    """Create or replace the issuer with its secret in one transaction: (issuer, created, changed)."""
    async with ISSUER.locked(conn) as current:
        if current is not None and current.deleted:
            raise Conflict(
                "The previous key issuer's keys are still being deleted with its credentials.",
                hint="Retry once they are (spacesvc keys list shows them).",
            )
        conditions.check(current, ISSUER)
        if current is None:
            if wanted.secret is None:
                field = "apiToken" if wanted.type == "digitalocean" else "secretKey"
                raise InvalidInput(
                    f"{field} is required when the issuer is first set.",
                    field=field,
                    details={field: ["Missing data for required field."]},
                )
            row = await conn.fetchrow(
                INSERT_ISSUER, wanted.type, wanted.access_key, wanted.region, backend.name, actor.name
            )
            created = issuer_from(row)
            secret_version = await backend.write(conn, created.secret_location, wanted.secret)
            issuer = await _store_issuer(conn, backend, wanted, secret_version, 1, actor)
            await ISSUER.changed(conn, issuer)
            await ISSUER.audit(conn, Action.CREATED, issuer.id, actor, {"type": issuer.type})
            return issuer, True, True
        if current.type != wanted.type:
            if await conn.fetchval(COUNT_KEYS):
                raise Conflict(
                    f"Keys minted by the {current.type} issuer exist; its type cannot change while they do.",
                    field="type",
                    hint="DELETE the issuer (its keys are deleted), then PUT the new one.",
                )
            if wanted.secret is None:
                field = "apiToken" if wanted.type == "digitalocean" else "secretKey"
                raise InvalidInput(f"{field} is required when the issuer's type changes.", field=field)
        secret_version, secret_changed = current.secret_version, False
        if wanted.secret is not None:
            stored = await backend.read(conn, current.secret_location)
            if stored is None or not hmac.compare_digest(stored.encode(), wanted.secret.encode()):
                secret_version = await backend.write(conn, current.secret_location, wanted.secret)
                secret_changed = True
        same = (current.type, current.access_key, current.region) == (wanted.type, wanted.access_key, wanted.region)
        if same and not secret_changed:
            return current, False, False
        issuer = await _store_issuer(conn, backend, wanted, secret_version, current.version + 1, actor)
        changed = [
            name
            for name, old, new in (
                ("type", current.type, wanted.type),
                ("accessKey", current.access_key, wanted.access_key),
                ("region", current.region, wanted.region),
            )
            if old != new
        ] + (["secret"] if secret_changed else [])
        await ISSUER.changed(conn, issuer)
        await ISSUER.audit(conn, Action.REPLACED, issuer.id, actor, {"fields": changed})
        return issuer, False, True


async def delete_issuer(conn: asyncpg.Connection, conditions: Preconditions, actor: Actor) -> IssuerConfig:
    """The issuer is marked deleted and every key it minted sent to deletion, in one transaction;
    the row and its secret go once those keys are deleted (``Keys.delete_pending``)."""
    async with ISSUER.locked(conn) as current:
        if current is None or current.deleted:
            raise no_issuer()
        conditions.check(current, ISSUER)
        await lock_for_write(conn)
        deleted = issuer_from(await conn.fetchrow(MARK_ISSUER_DELETED))
        if await conn.execute(SEND_ALL_TO_DELETION) != "UPDATE 0":
            await bump_config(conn, actor.name)
        await ISSUER.changed(conn, deleted)
        await ISSUER.audit(conn, Action.DELETED, current.id, actor, {"type": current.type})
    return current
