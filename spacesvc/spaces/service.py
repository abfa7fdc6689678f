"""The Spaces configuration's writes: what each does in which order, on the versioned-resource
core (``spacesvc.spaces.resource``) and the data layer (``spacesvc.spaces.queries``).

Every write takes the resource's transaction-scoped advisory lock, so concurrent writers
serialize (also when no row exists yet, where a row lock would have nothing to lock). The row
and its secret are written in that same transaction, so they commit, or fail, together.

Writes that arrive while others are being written are written together (``write_configs``,
by group commit: ``spacesvc.spaces.writes``). A write alone that stores no new secret, on a
configuration the process has in memory, is first tried as one statement (``FAST_UPDATE``): it
takes the same lock, changes the row only if its id and version are still the ones in memory
(compare-and-set), and records the audit entry and the change notification in the same
statement. One round trip instead of seven; when memory was stale (another process wrote
since), it changes nothing and the write runs the usual way.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

import asyncpg
import orjson

from backends import SecretBackend, SecretLocation, SecretUnreadable
from spacesvc import changes
from spacesvc.audit import queries as audit
from spacesvc.audit.model import Action, Actor, Resource
from spacesvc.errors import DomainError, InvalidInput, Unavailable
from spacesvc.resources.sql import NamedSQL
from spacesvc.resources.versioned import UNCONDITIONAL, Preconditions
from spacesvc.spaces import queries
from spacesvc.spaces.model import SpacesConfig, SpacesInput, WriteOutcome
from spacesvc.spaces.resource import SPACES

# The lock is taken before the row is compared: a writer holding it (one running the usual way)
# finishes first, and its commit fails the compare.
FAST_UPDATE = NamedSQL(f"""
WITH locked AS MATERIALIZED ({SPACES.lock_sql}),
updated AS (
    UPDATE spaces_config
    SET access_key = :access_key, region = :region, endpoint = :endpoint, buckets = :buckets,
        version = version + 1, updated_at = now(), updated_by = :actor
    WHERE EXISTS (SELECT FROM locked) AND id = :remembered_id::uuid AND version = :remembered_version
    RETURNING *
),
audited AS (
    {audit.INSERT_FROM}
    SELECT :action, '{SPACES.audit_type}', id::text, :actor, :request_id, :details::jsonb FROM updated
),
notified AS (SELECT pg_notify('{changes.CHANNEL}', {SPACES.notification_sql("updated")}) FROM updated)
SELECT {queries.config_columns("updated")}, (SELECT count(*) FROM notified) AS notified FROM updated
""")


@dataclass(frozen=True)
class ConfigWrite:
    """One client's write: what to store given the current configuration (``build``, which may
    raise), who asks, what the audit trail calls it (REPLACED or PATCHED), and its conditions."""

    build: Callable[[SpacesConfig | None], SpacesInput]
    actor: Actor
    action: Action
    preconditions: Preconditions = UNCONDITIONAL


async def write_configs(
    conn: asyncpg.Connection,
    backend: SecretBackend,
    writes: list[ConfigWrite],
    *,
    remembered: SpacesConfig | None = None,
) -> list[WriteOutcome | Exception]:
    """Writes that arrived together, applied in order, each as if it ran alone after the one
    before: one outcome per write, or the error it raises (a failed precondition, say).

    Together is one lock, one transaction, one audit statement, one change notification, and at
    most one secret written to the backend: the last one. A secret that a later write of the same
    batch replaces was never current outside the transaction, so no reader could have had it,
    and Vault is not asked to keep it. When the writes cannot run together (nothing is configured
    yet, or the backend or the database fails), each runs alone, so that one write's failure is
    not another's. ``remembered`` is offered to a write that comes alone (``write_config``).
    """
    if len(writes) == 1:
        return [await _alone(conn, backend, writes[0], remembered)]
    try:
        outcomes = await _together(conn, backend, writes)
    except Exception:
        outcomes = None
    if outcomes is None:
        return [await _alone(conn, backend, write, None) for write in writes]
    return outcomes


async def _alone(
    conn: asyncpg.Connection, backend: SecretBackend, write: ConfigWrite, remembered: SpacesConfig | None
) -> WriteOutcome | Exception:
    try:
        return await write_config(
            conn,
            backend,
            write.build,
            actor=write.actor,
            action=write.action,
            preconditions=write.preconditions,
            remembered=remembered,
        )
    except Exception as error:  # this write's own: raised to its client alone
        return error


_UNREAD: Final = object()


async def _together(
    conn: asyncpg.Connection, backend: SecretBackend, writes: list[ConfigWrite]
) -> list[WriteOutcome | Exception] | None:
    """``write_configs`` in one transaction; None when nothing is configured (a first write is
    written alone: it creates the row the others change)."""
    async with SPACES.locked(conn) as current:
        if current is None:
            return None
        state, outcomes, entries = current, list[WriteOutcome | Exception](), []
        stored_secret: object = _UNREAD  # the secret the backend holds now, read once if needed
        secret_of_state: object = _UNREAD
        new_secret: str | None = None
        for write in writes:
            try:
                write.preconditions.check(state, SPACES)
                desired = write.build(state)
                secret_changed = False
                if desired.secret is not None:
                    elsewhere = held_elsewhere(state, backend)
                    if elsewhere is not None:
                        raise elsewhere
                    if stored_secret is _UNREAD:
                        stored_secret = secret_of_state = await _secret_to_compare(conn, backend, current)
                    secret_changed = not _same_secret(secret_of_state, desired.secret)
            except DomainError as error:
                outcomes.append(error)
                continue
            if not secret_changed and desired.fields == state.fields:
                outcomes.append(WriteOutcome(state, created=False, changed=False))
                continue
            after = replace(
                state,
                fields=desired.fields,
                secret_backend=backend.name if secret_changed else state.secret_backend,
                secret_stored=state.secret_stored or secret_changed,
                version=state.version + 1,
                updated_by=write.actor.name,
            )
            if secret_changed:
                secret_of_state = new_secret = desired.secret
            changed = _changed_fields(state, after, secret_changed=secret_changed)
            entries.append((write.action.value, write.actor, {"fields": changed}))
            outcomes.append(WriteOutcome(after, created=False, changed=True, secret_changed=secret_changed))
            state = after
        if not entries:
            return outcomes
        secret_version = current.secret_version
        if new_secret is not None and not _same_secret(stored_secret, new_secret):
            secret_version = await backend.write(conn, current.secret_location, new_secret)
        stored = await queries.store(
            conn,
            state.secret_backend,
            state.fields,
            state.secret_stored,
            secret_version,
            version=state.version,
            actor=state.updated_by,
        )
        await SPACES.changed(conn, stored)
        await audit.record_all(conn, SPACES.audit_type, current.id, entries)
    # what each write left, as of the commit (the versions between were never read by anyone else)
    return [
        replace(outcome, config=replace(outcome.config, updated_at=stored.updated_at, secret_version=secret_version))
        if isinstance(outcome, WriteOutcome) and outcome.config.version > current.version
        else outcome
        for outcome in outcomes
    ]


def _same_secret(stored: object, given: str) -> bool:
    return isinstance(stored, str) and hmac.compare_digest(stored.encode(), given.encode())


class SecretMoveError(Exception):
    """The secret could not be moved between backends; nothing was changed. str() is one line."""


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
    async with SPACES.locked(conn) as current:
        preconditions.check(current, SPACES)
        desired = build(current)
        if current is None:
            outcome = await _create(conn, backend, desired, actor.name)
            await SPACES.changed(conn, outcome.config)
            changed = [*FIELD_NAMES, *(["secretKey"] if desired.secret is not None else [])]
            await SPACES.audit(conn, Action.CREATED, outcome.config.id, actor, {"fields": changed})
            return outcome
        outcome = await _update(conn, backend, current, desired, actor.name)
        if outcome.changed:
            await SPACES.changed(conn, outcome.config)
            changed = _changed_fields(current, outcome.config, secret_changed=outcome.secret_changed)
            await SPACES.audit(conn, action, current.id, actor, {"fields": changed})
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
        preconditions.check(remembered, SPACES)
        desired = build(remembered)
    except DomainError:
        return None  # decided against memory: the usual way decides against the database
    if desired.secret is not None or desired.fields == remembered.fields:
        return None  # a secret to store, or nothing to change (which only the database can confirm)
    fields = desired.fields
    changed = _changed_fields(remembered, replace(remembered, fields=fields), secret_changed=False)
    row = await conn.fetchrow(
        FAST_UPDATE.text,
        *FAST_UPDATE.args(
            access_key=fields.access_key,
            region=fields.region,
            endpoint=fields.endpoint,
            buckets=list(fields.buckets),
            actor=actor.name,
            remembered_id=remembered.id,
            remembered_version=remembered.version,
            action=action.value,
            request_id=actor.request_id,
            details=orjson.dumps({"fields": changed}).decode(),
        ),
    )
    if row is None:
        return None  # memory was stale
    return WriteOutcome(queries.config_from_row(row), created=False, changed=True)


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
    config_id = await queries.insert(conn, fields, backend.name, actor)
    secret_version = None
    if desired.secret is not None:
        secret_version = await backend.write(conn, SecretLocation(config_id), desired.secret)
    config = await queries.store(
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
        stored = await _secret_to_compare(conn, backend, current)
        if not _same_secret(stored, desired.secret):
            secret_version = await backend.write(conn, current.secret_location, desired.secret)
            secret_stored, secret_changed = True, True
    if not secret_changed and desired.fields == current.fields:
        return WriteOutcome(current, created=False, changed=False)
    # The row names the backend that holds its secret: only a secret written now moves it.
    holder = backend.name if secret_changed else current.secret_backend
    config = await queries.store(
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


async def _secret_to_compare(conn: asyncpg.Connection, backend: SecretBackend, current: SpacesConfig) -> str | None:
    """The secret stored now, to compare with a new one; an unreadable one counts as absent,
    so that sending a new secret is how an operator recovers from a lost key."""
    if not current.secret_stored or current.secret_backend != backend.name:
        return None
    try:
        return await backend.read(conn, current.secret_location)
    except SecretUnreadable:
        return None


async def delete_config(
    conn: asyncpg.Connection,
    backend: SecretBackend,
    *,
    actor: Actor,
    preconditions: Preconditions = UNCONDITIONAL,
) -> SpacesConfig | None:
    """Remove the row, its enablement and its secret together; returns what was removed (None:
    nothing was)."""
    async with SPACES.locked(conn) as current:
        if current is None:
            return None
        preconditions.check(current, SPACES)
        await queries.delete(conn)
        await SPACES.changed(conn)
        await backend.delete(conn, current.secret_location)
        await SPACES.audit(conn, Action.DELETED, current.id, actor, {"version": current.version})
    await backend.purge(current.secret_location)
    return current


async def move_secret(
    conn: asyncpg.Connection, source: SecretBackend, target: SecretBackend, *, actor: Actor
) -> SpacesConfig:
    """Copy the secret from ``source`` to ``target``, confirm it reads back, then point the row
    at the target and remove the source copy; any failure before that keeps the source as it was."""
    async with SPACES.locked(conn) as current:
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
        moved = await queries.point_secret_at(conn, target.name, version, actor.name)
        await SPACES.changed(conn, moved)
        await source.delete(conn, current.secret_location)
        details = {"from": source.name, "to": target.name}
        await audit.record(conn, Action.MOVED, Resource.SECRET, current.id, actor, details)
    await source.purge(current.secret_location)
    return moved
