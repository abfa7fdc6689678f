"""What ``GET /api/settings/spaces/environments`` shows of each environment beyond BRIDGEPORT's
fields: its grants and its own key (never a secret); docs/keys.md."""

from __future__ import annotations

from typing import Any

import asyncpg

from spacesvc.http.jsonio import timestamp
from spacesvc.keys import store
from spacesvc.keys.model import ACTIVE
from spacesvc.keys.service import rotates_at


async def listing(conn: asyncpg.Connection, max_age: float | None) -> list[dict[str, Any]]:
    config = await conn.fetchrow(store.SELECT_CONFIG)
    configured = tuple(config["buckets"]) if config is not None else ()
    active = {key.environment_id: key for key in await store.keys(conn) if key.state == ACTIVE}
    listed = []
    for row in await conn.fetch(store.SELECT_ALL_GRANTS):
        grants = store.grants_from(row)
        key = active.get(row["id"])
        at = None if key is None else rotates_at(key, max_age)
        listed.append(
            {
                "id": row["id"],
                "name": row["name"],
                "spacesEnabled": row["enabled"],
                "buckets": list(grants.effective(configured)),
                "permission": grants.permission,
                "key": None
                if key is None
                else {
                    "accessKey": key.access_key,
                    "createdAt": timestamp(key.created_at),
                    "rotatesAt": None if at is None else timestamp(at),
                },
            }
        )
    return listed
