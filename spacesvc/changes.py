"""Change notifications: every change that in-memory reads depend on tells every process, with
``NOTIFY spacesvc_changes`` in its own transaction (delivered when it commits). ``spacesvc.live``
listens."""

from __future__ import annotations

import asyncpg

CHANNEL = "spacesvc_changes"
# What a notification names: the configuration (with its enablement), or the tokens.
CONFIG = "config"
TOKENS = "tokens"
NOTIFY = f"SELECT pg_notify('{CHANNEL}', $1)"


async def notify(conn: asyncpg.Connection, *what: str) -> None:
    """Inside a change's transaction: tell every process what to drop (delivered at commit)."""
    for name in what:
        await conn.execute(NOTIFY, name)
