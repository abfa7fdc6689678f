"""The key issuer as a versioned resource (``spacesvc.resources.versioned``), and the audit
trail's words for the keys it mints (docs/keys.md)."""

from __future__ import annotations

import asyncpg

from spacesvc.audit import model as audit_trail
from spacesvc.keys.model import IssuerConfig
from spacesvc.resources.versioned import VersionedResource

TABLE = "key_issuer"
ISSUER_COLUMNS = """id::text AS id, type, access_key, region, secret_backend, secret_version, version,
created_at, updated_at, updated_by, deleted"""
SELECT_ISSUER = f"SELECT {ISSUER_COLUMNS} FROM {TABLE}"

# The keys' entries: resourceType "key", with these actions beside created and deleted.
KEY = "key"
ROTATED, RETIRED = "rotated", "retired"
ISSUER_TESTED = "issuer.tested"
audit_trail.register(KEY, (ROTATED, RETIRED))


def issuer_from(row: asyncpg.Record) -> IssuerConfig:
    return IssuerConfig(**dict(row))


async def get_issuer(conn: asyncpg.Connection) -> IssuerConfig | None:
    """The issuer's row, also while it is deleted but kept for its keys' deletion (``deleted``)."""
    row = await conn.fetchrow(SELECT_ISSUER)
    return issuer_from(row) if row is not None else None


ISSUER: VersionedResource[IssuerConfig] = VersionedResource(
    name="issuer",
    table=TABLE,
    lock_id=0x5BACE5_0003,
    audit_type="issuer",
    title="The key issuer",
    noun="the issuer",
    absent="no issuer is configured",
    load=get_issuer,
    actions=(ISSUER_TESTED,),
)
