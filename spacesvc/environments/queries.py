"""The environments' SQL: create, list, find, delete (revoking the tokens bound to one), and the
Spaces configuration's enablement per environment. Every change is audited in its transaction.

The enablement is part of the configuration's representation (``enabledEnvironments``): changing
it is a new version of the configuration (``SPACES.bump``, under ``SPACES``'s lock), so ETags,
conditional reads and watches see it."""

from __future__ import annotations

import asyncpg

from spacesvc import changes
from spacesvc.audit import queries as audit
from spacesvc.audit.model import Action, Actor, Resource
from spacesvc.environments.model import NAME, Environment, SpacesEnablement
from spacesvc.errors import Conflict, InvalidInput, NotFound
from spacesvc.spaces.model import not_configured
from spacesvc.spaces.resource import SPACES

ENVIRONMENT_COLUMNS = "id::text AS id, name, created_at"
SELECT_ENVIRONMENTS = f"SELECT {ENVIRONMENT_COLUMNS} FROM environments ORDER BY name"
SELECT_BY_NAME_OR_ID = f"""
SELECT {ENVIRONMENT_COLUMNS} FROM environments WHERE name = $1 OR id::text = $1
ORDER BY name = $1 DESC LIMIT 1
"""
SELECT_BY_ID = f"SELECT {ENVIRONMENT_COLUMNS} FROM environments WHERE id::text = $1"
INSERT_ENVIRONMENT = f"INSERT INTO environments (name) VALUES ($1) RETURNING {ENVIRONMENT_COLUMNS}"
DELETE_ENVIRONMENT = "DELETE FROM environments WHERE id = $1::uuid"
REVOKE_BOUND_TOKENS = """
UPDATE api_tokens SET revoked_at = now()
WHERE environment_id = $1::uuid AND revoked_at IS NULL
RETURNING id::text AS id, name
"""
SELECT_ENABLEMENT = """
SELECT e.id::text AS id, e.name, coalesce(se.enabled, false) AS enabled
FROM environments e
LEFT JOIN spaces_config c ON true
LEFT JOIN spaces_environments se ON se.environment_id = e.id AND se.config_id = c.id
ORDER BY e.name
"""
SELECT_ONE_ENABLEMENT = """
SELECT enabled FROM spaces_environments WHERE config_id = $1::uuid AND environment_id = $2::uuid
"""
REMOVE_ENABLEMENT = "DELETE FROM spaces_environments WHERE environment_id = $1::uuid RETURNING config_id"
UPSERT_ENABLEMENT = """
INSERT INTO spaces_environments (config_id, environment_id, enabled) VALUES ($1, $2::uuid, $3)
ON CONFLICT (config_id, environment_id) DO UPDATE SET enabled = EXCLUDED.enabled
"""
SELECT_ENABLED = """
SELECT coalesce(bool_or(se.enabled), false)
FROM spaces_environments se JOIN spaces_config c ON c.id = se.config_id
WHERE se.environment_id = $1::uuid
"""


def _environment(row: asyncpg.Record) -> Environment:
    return Environment(id=row["id"], name=row["name"], created_at=row["created_at"])


def check_name(name: str) -> None:
    if not NAME.match(name):
        raise InvalidInput(
            "An environment's name is 1 to 63 characters of a-z, 0-9 and '-'.",
            field="name",
            details={"name": ["Must be 1 to 63 characters of a-z, 0-9 and '-'."]},
        )


async def list_environments(conn: asyncpg.Connection) -> list[Environment]:
    return [_environment(row) for row in await conn.fetch(SELECT_ENVIRONMENTS)]


async def find(conn: asyncpg.Connection, name_or_id: str) -> Environment:
    """The environment with this name (first) or id, for the command line."""
    row = await conn.fetchrow(SELECT_BY_NAME_OR_ID, name_or_id)
    if row is None:
        raise NotFound(f"No environment is named or has the id {name_or_id!r}.")
    return _environment(row)


async def get(conn: asyncpg.Connection, environment_id: str) -> Environment:
    """The environment with this id, for the API (whose routes name environments by id)."""
    row = await conn.fetchrow(SELECT_BY_ID, environment_id)
    if row is None:
        raise unknown_id()
    return _environment(row)


def unknown_id() -> NotFound:
    """No environment has the id asked for (or it was deleted since)."""
    return NotFound("No environment has this id.", hint="GET /api/environments lists them.")


async def create(conn: asyncpg.Connection, name: str, actor: Actor) -> Environment:
    check_name(name)
    async with conn.transaction():
        try:
            environment = _environment(await conn.fetchrow(INSERT_ENVIRONMENT, name))
        except asyncpg.UniqueViolationError:
            raise Conflict(f"An environment named {name!r} exists already.", field="name") from None
        await audit.record(conn, Action.CREATED, Resource.ENVIRONMENT, environment.id, actor, {"name": name})
    return environment


async def delete(conn: asyncpg.Connection, environment: Environment, actor: Actor) -> None:
    """Remove an environment, its enablement, and every token bound to it (revoked first)."""
    async with conn.transaction():
        for token in await conn.fetch(REVOKE_BOUND_TOKENS, environment.id):
            details = {"name": token["name"], "reason": f"environment {environment.name} deleted"}
            await audit.record(conn, Action.REVOKED, Resource.TOKEN, token["id"], actor, details)
        await SPACES.lock(conn)
        if await conn.fetch(REMOVE_ENABLEMENT, environment.id):
            await SPACES.bump(conn, actor)
        await conn.execute(DELETE_ENVIRONMENT, environment.id)
        # the credentials of the environment (read with the configuration) are gone too
        await SPACES.changed(conn)
        await changes.notify(conn, changes.TOKENS)
        details = {"name": environment.name}
        await audit.record(conn, Action.DELETED, Resource.ENVIRONMENT, environment.id, actor, details)


async def enablement(conn: asyncpg.Connection) -> list[SpacesEnablement]:
    """Every environment with whether the configuration is enabled for it (all false when none)."""
    return [SpacesEnablement(row["id"], row["name"], row["enabled"]) for row in await conn.fetch(SELECT_ENABLEMENT)]


async def set_enabled(conn: asyncpg.Connection, environment_id: str, enabled: bool, actor: Actor) -> Environment:
    """Enable or disable the configuration for an environment; a change is a new version of the
    configuration (a call that changes nothing records nothing)."""
    async with SPACES.locked(conn) as config:
        if config is None:
            raise not_configured()
        environment = await get(conn, environment_id)
        if await conn.fetchval(SELECT_ONE_ENABLEMENT, config.id, environment.id) is enabled:
            return environment
        await conn.execute(UPSERT_ENABLEMENT, config.id, environment.id, enabled)
        await SPACES.bump(conn, actor)
        action = Action.ENABLED if enabled else Action.DISABLED
        await audit.record(conn, action, Resource.ENVIRONMENT, environment.id, actor, {"name": environment.name})
    return environment


async def is_enabled(conn: asyncpg.Connection, environment_id: str) -> bool:
    return bool(await conn.fetchval(SELECT_ENABLED, environment_id))
