"""Databases of a test's own on the test PostgreSQL server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from yarl import URL


def database_url_for(admin_url: str, name: str) -> str:
    return str(URL(admin_url).with_path(f"/{name}"))


@asynccontextmanager
async def fresh_database(admin_url: str, prefix: str, template: str | None = None) -> AsyncIterator[str]:
    """A database of its own (a clone of ``template`` if given), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    clone = f' TEMPLATE "{template}"' if template else ""
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"{clone}')
    finally:
        await admin.close()
    try:
        yield database_url_for(admin_url, name)
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
