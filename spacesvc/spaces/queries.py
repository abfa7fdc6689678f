"""The Spaces configuration's data layer: named SQL, one transaction per write.

Every write takes one transaction-scoped advisory lock, so concurrent writers serialize (also
when no row exists yet, where a row lock would have nothing to lock). The row and its secret
are written in that same transaction, so they commit, or fail, together.

A write that stores no new secret, on a configuration the process has in memory, is first tried
as one statement (``FAST_UPDATE``): it takes the same lock, changes the row only if its id and
version are still the ones in memory (compare-and-set), and records the audit entry and the
change notification in the same statement. One round trip instead of seven; when memory was
stale (another process wrote since), it changes nothing and the write runs the usual way.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import replace

import asyncpg
import orjson

from backends import SecretBackend, SecretLocation, SecretUnreadable
from spacesvc import changes
from spacesvc.audit import queries as audit
from spacesvc.audit.model import Action, Actor, Resource
from spacesvc.errors import DomainError, InvalidInput, Unavailable
from spacesvc.spaces.model import (
    UNCONDITIONAL,
    Enablement,
    Preconditions,
    SpacesConfig,
    SpacesFields,
    SpacesInput,
    WriteOutcome,
)

WRITE_LOCK_ID = 0x5BACE5_0002

LOCK_FOR_WRITE = "SELECT pg_advisory_xact_lock($1)"


def config_columns(table: str) -> str:
    """The columns every query that returns a configuration reads (see _config), from ``table``."""
    return f"""{table}.id::text AS id, access_key, region, endpoint, buckets, secret_backend, secret_stored,
    secret_version, version, created_at, updated_at, updated_by,
    (SELECT coalesce(json_agg(json_build_object('id', se.id, 'environmentId', se.environment_id,
                                                'enabled', se.enabled) ORDER BY se.id), '[]')
     FROM spaces_environments se WHERE se.config_id = {table}.id)::text AS enabled_environments"""


CONFIG_COLUMNS = config_columns("spaces_config")
SELECT_CONFIG = f"SELECT {CONFIG_COLUMNS} FROM spaces_config"
INSERT_CONFIG = """
INSERT INTO spaces_config (access_key, region, endpoint, buckets, secret_backend, updated_by)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id::text
"""
UPDATE_CONFIG = f"""
UPDATE spaces_config
SET access_key = $1, region = $2, endpoint = $3, buckets = $4, secret_backend = $5,
    secret_stored = $6, secret_version = $7, version = $8, updated_at = now(), updated_by = $9
RETURNING {CONFIG_COLUMNS}
"""
# $1-$4 the fields, $5 the actor, $6 the id and $7 the version in memory, $8 the audit action,
# $9 the request id, $10 the audit details. The lock is taken before the row is compared: a
# writer holding it (one running the usual way) finishes first, and its commit fails the compare.
FAST_UPDATE = f"""
WITH locked AS MATERIALIZED (SELECT pg_advisory_xact_lock({WRITE_LOCK_ID})),
updated AS (
    UPDATE spaces_config
    SET access_key = $1, region = $2, endpoint = $3, buckets = $4, version = version + 1,
        updated_at = now(), updated_by = $5
    WHERE EXISTS (SELECT FROM locked) AND id = $6::uuid AND version = $7
    RETURNING *
),
audited AS (
    {audit.INSERT_FROM} SELECT $8, '{Resource.SPACES_CONFIG.value}', id::text, $5, $9, $10::jsonb FROM updated
),
notified AS (SELECT pg_notify('{changes.CHANNEL}', {changes.CONFIG_AT_SQL}) FROM updated)
SELECT {config_columns("updated")}, (SELECT count(*) FROM notified) AS notified FROM updated
"""
DELETE_CONFIG = "DELETE FROM spaces_config"
MOVE_SECRET = f"""
UPDATE spaces_config
SET secret_backend = $1, secret_stored = true, secret_version = $2, version = version + 1,
    updated_at = now(), updated_by = $3
RETURNING {CONFIG_COLUMNS}
"""


class SecretMoveError(Exception):
    """The secret could not be moved between backends; nothing was changed. str() is one line."""


def _config(row: asyncpg.Record) -> SpacesConfig:
    return SpacesConfig(
        id=row["id"],
        fields=SpacesFields(row["access_key"], row["region"], row["endpoint"], tuple(row["buckets"])),
        secret_backend=row["secret_backend"],
        secret_stored=row["secret_stored"],
        secret_version=row["secret_version"],
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        updated_by=row["updated_by"],
        enabled_environments=tuple(
            Enablement(item["id"], item["environmentId"], item["enabled"])
            for item in orjson.loads(row["enabled_environments"])
        ),
    )


async def get_config(conn: asyncpg.Connection) -> SpacesConfig | None:
    row = await conn.fetchrow(SELECT_CONFIG)
    return _config(row) if row is not None else None


async def _lock_for_write(conn: asyncpg.Connection) -> SpacesConfig | None:
    """Inside a transaction: wait for the write lock, then read the configuration it guards."""
    await conn.execute(LOCK_FOR_WRITE, WRITE_LOCK_ID)
    return await get_config(conn)


async def write_config(
    conn: asyncpg.Connection,
    backend: SecretBackend,
    build: Callable[[SpacesConfig | None], SpacesInput],
    *,
    actor: Actor,
    action: Action,
    preconditions: Preconditions = UNCONDITIONAL,
    remembered: SpacesConfig | None = None,
) -> WriteOutcome:
    """Create or change the configuration atomically, with its audit entry (``action`` names a
    change: REPLACED or PATCHED; a first write is CREATED).

    ``build`` runs under the write lock with the current configuration (None if there is
    none) and returns what to store; it may raise, which rolls everything back. ``remembered``
    is the configuration in this process's memory, if any: the fast path's guess of the current
    one (see the module's docstring).
    """
    if remembered is not None:
        outcome = await _fast_update(conn, build, remembered, actor=actor, action=action, preconditions=preconditions)
        if outcome is not None:
            return outcome
    async with conn.transaction():
        current = await _lock_for_write(conn)
        preconditions.check(current)
        desired = build(current)
        if current is None:
            outcome = await _create(conn, backend, desired, actor.name)
            await changes.notify(conn, changes.config_at_payload(outcome.config.id, outcome.config.version))
            changed = [*FIELD_NAMES, *(["secretKey"] if desired.secret is not None else [])]
            await audit.record(
                conn, Action.CREATED, Resource.SPACES_CONFIG, outcome.config.id, actor, {"fields": changed}
            )
            return outcome
        outcome = await _update(conn, backend, current, desired, actor.name)
        if outcome.changed:
            await changes.notify(conn, changes.config_at_payload(outcome.config.id, outcome.config.version))
            changed = _changed_fields(current, outcome.config, secret_changed=outcome.secret_changed)
            await audit.record(conn, action, Resource.SPACES_CONFIG, current.id, actor, {"fields": changed})
        return outcome


async def _fast_update(
    conn: asyncpg.Connection,
    build: Callable[[SpacesConfig | None], SpacesInput],
    remembered: SpacesConfig,
    *,
    actor: Actor,
    action: Action,
    preconditions: Preconditions,
) -> WriteOutcome | None:
    """The write as one statement, if ``remembered`` is current and the write changes fields
    only; None when it must run the usual way (nothing was written then)."""
    try:
        preconditions.check(remembered)
        desired = build(remembered)
    except DomainError:
        return None  # decided against memory: the usual way decides against the database
    if desired.secret is not None or desired.fields == remembered.fields:
        return None  # a secret to store, or nothing to change (which only the database can confirm)
    fields = desired.fields
    changed = _changed_fields(remembered, replace(remembered, fields=fields), secret_changed=False)
    row = await conn.fetchrow(
        FAST_UPDATE,
        fields.access_key,
        fields.region,
        fields.endpoint,
        list(fields.buckets),
        actor.name,
        remembered.id,
        remembered.version,
        action.value,
        actor.request_id,
        orjson.dumps({"fields": changed}).decode(),
    )
    if row is None:
        return None  # memory was stale
    return WriteOutcome(_config(row), created=False, changed=True)


# The API's names of the stored fields, in the order the API shows them.
FIELD_NAMES = ("accessKey", "region", "endpoint", "buckets")


def _changed_fields(before: SpacesConfig, after: SpacesConfig, *, secret_changed: bool) -> list[str]:
    """The API names of what a write changed; the secret only as changed, never its value."""
    pairs = zip(
        FIELD_NAMES,
        (before.fields.access_key, before.fields.region, before.fields.effective_endpoint, before.fields.buckets),
        (after.fields.access_key, after.fields.region, after.fields.effective_endpoint, after.fields.buckets),
        strict=True,
    )
    return [name for name, old, new in pairs if old != new] + (["secretKey"] if secret_changed else [])


async def _create(conn: asyncpg.Connection, backend: SecretBackend, desired: SpacesInput, actor: str) -> WriteOutcome:
    if desired.secret is None and backend.writable:
        raise InvalidInput(
            "secretKey is required when the Spaces configuration is first created.",
            field="secretKey",
            details={"secretKey": ["Missing data for required field."]},
        )
    fields = desired.fields
    config_id = await conn.fetchval(
        INSERT_CONFIG, fields.access_key, fields.region, fields.endpoint, list(fields.buckets), backend.name, actor
    )
    secret_version = None
    if desired.secret is not None:
        secret_version = await backend.write(conn, SecretLocation(config_id), desired.secret)
    config = await _store(
        conn, backend.name, fields, desired.secret is not None, secret_version, version=1, actor=actor
    )
    return WriteOutcome(config, created=True, changed=True)


async def _update(
    conn: asyncpg.Connection, backend: SecretBackend, current: SpacesConfig, desired: SpacesInput, actor: str
) -> WriteOutcome:
    secret_stored, secret_version = current.secret_stored, current.secret_version
    secret_changed = False
    if desired.secret is not None:
        # A replica still running the backend the secret was moved away from may not move it back.
        elsewhere = held_elsewhere(current, backend)
        if elsewhere is not None:
            raise elsewhere
        stored = await _stored_secret(conn, backend, current)
        if stored is None or not hmac.compare_digest(stored.encode(), desired.secret.encode()):
            secret_version = await backend.write(conn, current.secret_location, desired.secret)
            secret_stored, secret_changed = True, True
    if not secret_changed and desired.fields == current.fields:
        return WriteOutcome(current, created=False, changed=False)
    # The row names the backend that holds its secret: only a secret written now moves it.
    holder = backend.name if secret_changed else current.secret_backend
    config = await _store(
        conn, holder, desired.fields, secret_stored, secret_version, version=current.version + 1, actor=actor
    )
    return WriteOutcome(config, created=False, changed=True, secret_changed=secret_changed)


def held_elsewhere(config: SpacesConfig, backend: SecretBackend) -> Unavailable | None:
    """Whether the row says another backend holds its stored secret: the one way this is told,
    by readiness, reads and writes alike, naming both backends and the way out in each direction."""
    if not config.secret_stored or config.secret_backend == backend.name:
        return None
    held, here = config.secret_backend, backend.name
    hint = (
        f"If the secret was moved to {held} (`spacesvc secrets migrate --to {held}`), set "
        f"SPACESVC_SECRET_BACKEND={held} here and restart"
    )
    if backend.writable:
        hint += f"; to keep it in {here} instead, run `spacesvc secrets migrate --to {here}`"
    return Unavailable(
        "secret_backend",
        f"The stored secretKey is in the {held} backend, but this service runs with SPACESVC_SECRET_BACKEND={here}.",
        hint=hint + ".",
    )


async def stored_secret(conn: asyncpg.Connection, backend: SecretBackend, config: SpacesConfig) -> str | None:
    """The secret of ``config`` (None when none is stored), read from ``backend``; a secret the
    row says another backend holds is Unavailable (``held_elsewhere``)."""
    elsewhere = held_elsewhere(config, backend)
    if elsewhere is not None:
        raise elsewhere
    return await backend.read(conn, config.secret_location)


async def _stored_secret(conn: asyncpg.Connection, backend: SecretBackend, current: SpacesConfig) -> str | None:
    """The secret stored now, to compare with a new one; an unreadable one counts as absent,
    so that sending a new secret is how an operator recovers from a lost key."""
    if not current.secret_stored or current.secret_backend != backend.name:
        return None
    try:
        return await backend.read(conn, current.secret_location)
    except SecretUnreadable:
        return None


async def _store(
    conn: asyncpg.Connection,
    secret_backend: str,
    fields: SpacesFields,
    secret_stored: bool,
    secret_version: int | None,
    *,
    version: int,
    actor: str,
) -> SpacesConfig:
    row = await conn.fetchrow(
        UPDATE_CONFIG,
        fields.access_key,
        fields.region,
        fields.endpoint,
        list(fields.buckets),
        secret_backend,
        secret_stored,
        secret_version,
        version,
        actor,
    )
    return _config(row)


async def delete_config(
    conn: asyncpg.Connection,
    backend: SecretBackend,
    *,
    actor: Actor,
    preconditions: Preconditions = UNCONDITIONAL,
) -> SpacesConfig | None:
    """Remove the row, its enablement and its secret together; returns what was removed (None:
    nothing was)."""
    async with conn.transaction():
        current = await _lock_for_write(conn)
        if current is None:
            return None
        preconditions.check(current)
        await conn.execute(DELETE_CONFIG)
        await changes.notify(conn, changes.CONFIG)
        await backend.delete(conn, current.secret_location)
        await audit.record(
            conn, Action.DELETED, Resource.SPACES_CONFIG, current.id, actor, {"version": current.version}
        )
    await backend.purge(current.secret_location)
    return current


async def move_secret(
    conn: asyncpg.Connection, source: SecretBackend, target: SecretBackend, *, actor: Actor
) -> SpacesConfig:
    """Copy the secret from ``source`` to ``target``, confirm it reads back, then point the row
    at the target and remove the source copy; any failure before that keeps the source as it was."""
    async with conn.transaction():
        current = await _lock_for_write(conn)
        if current is None:
            raise SecretMoveError("nothing is configured: there is no secret to move")
        if current.secret_backend == target.name:
            raise SecretMoveError(f"the secret is already in the {target.name} backend")
        if current.secret_backend != source.name:
            raise SecretMoveError(
                f"the stored secret is in the {current.secret_backend} backend: "
                f"run this with SPACESVC_SECRET_BACKEND={current.secret_backend}"
            )
        secret = await source.read(conn, current.secret_location)
        if secret is None:
            raise SecretMoveError(f"the {source.name} backend holds no secret to move")
        version = await target.write(conn, SecretLocation(current.id), secret)
        if await target.read(conn, SecretLocation(current.id, version)) != secret:
            raise SecretMoveError(f"the {target.name} backend did not return the secret it was given; nothing moved")
        moved = _config(await conn.fetchrow(MOVE_SECRET, target.name, version, actor.name))
        await changes.notify(conn, changes.CONFIG)
        await source.delete(conn, current.secret_location)
        details = {"from": source.name, "to": target.name}
        await audit.record(conn, Action.MOVED, Resource.SECRET, current.id, actor, details)
    await source.purge(current.secret_location)
    return moved
