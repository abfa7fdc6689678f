"""Change notifications: every change that in-memory reads depend on tells every process, with
``NOTIFY spacesvc_changes`` in its own transaction (delivered when it commits). ``spacesvc.live``
listens."""

from __future__ import annotations

import asyncpg

CHANNEL = "spacesvc_changes"
# What a notification names: the configuration (with its enablement), or the tokens. A
# configuration change may say what it left: "config <id> <version>" (see ``config_at``).
CONFIG = "config"
TOKENS = "tokens"
NOTIFY = f"SELECT pg_notify('{CHANNEL}', $1)"
# The payload of a change that left configuration <id> at <version>, built in SQL.
CONFIG_AT_SQL = f"'{CONFIG} ' || id::text || ' ' || version::text"


def config_at_payload(config_id: str, version: int) -> str:
    """The payload of a change that left configuration ``config_id`` at ``version``."""
    return f"{CONFIG} {config_id} {version}"


def config_at(payload: str) -> tuple[str, int] | None:
    """The (id, version) a configuration notification says the change left, if it says."""
    what, _, at = payload.partition(" ")
    config_id, _, version = at.partition(" ")
    if what != CONFIG or not version.isdigit():
        return None
    return config_id, int(version)


async def notify(conn: asyncpg.Connection, *what: str) -> None:
    """Inside a change's transaction: tell every process what to drop (delivered at commit)."""
    for name in what:
        await conn.execute(NOTIFY, name)
