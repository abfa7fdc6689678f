"""The Spaces configuration's data layer: its SQL, named, and its rows as ``SpacesConfig``.
What a write does in which order is ``spacesvc.spaces.service``."""

from __future__ import annotations

import asyncpg
import orjson

from spacesvc.spaces.model import Enablement, SpacesConfig, SpacesFields

TABLE = "spaces_config"


def config_columns(table: str) -> str:
    """The columns every query that returns a configuration reads (see ``config_from_row``)."""
    return f"""{table}.id::text AS id, access_key, region, endpoint, buckets, secret_backend, secret_stored,
    secret_version, version, created_at, updated_at, updated_by,
    (SELECT coalesce(json_agg(json_build_object('id', se.id, 'environmentId', se.environment_id,
                                                'enabled', se.enabled) ORDER BY se.id), '[]')
     FROM spaces_environments se WHERE se.config_id = {table}.id)::text AS enabled_environments"""


CONFIG_COLUMNS = config_columns(TABLE)
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
DELETE_CONFIG = "DELETE FROM spaces_config"
MOVE_SECRET = f"""
UPDATE spaces_config
SET secret_backend = $1, secret_stored = true, secret_version = $2, version = version + 1,
    updated_at = now(), updated_by = $3
RETURNING {CONFIG_COLUMNS}
"""


def config_from_row(row: asyncpg.Record) -> SpacesConfig:
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
    return config_from_row(row) if row is not None else None


async def insert(conn: asyncpg.Connection, fields: SpacesFields, secret_backend: str, actor: str) -> str:
    """A new row (version 1, no secret yet); its id."""
    return str(
        await conn.fetchval(
            INSERT_CONFIG,
            fields.access_key,
            fields.region,
            fields.endpoint,
            list(fields.buckets),
            secret_backend,
            actor,
        )
    )


async def store(
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
    return config_from_row(row)


async def delete(conn: asyncpg.Connection) -> None:
    await conn.execute(DELETE_CONFIG)


async def point_secret_at(
    conn: asyncpg.Connection, secret_backend: str, secret_version: int | None, actor: str
) -> SpacesConfig:
    """The row now names ``secret_backend`` as the holder of its secret (a new version)."""
    return config_from_row(await conn.fetchrow(MOVE_SECRET, secret_backend, secret_version, actor))
