"""Waiting for a change to show, and how long it took."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp.test_utils import TestClient

from spacesvc.live import LIVE


async def seconds_until(check: Callable[[], Awaitable[bool]], *, limit: float = 5.0) -> float:
    """Poll ``check`` until it holds; the seconds that took (``limit`` exceeded fails)."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > limit:
            raise AssertionError(f"the change did not show within {limit}s")
        await asyncio.sleep(0.002)
    return time.monotonic() - started


async def until_listening(client: TestClient) -> None:
    """Wait until the client's app listens for changes (it serves from memory from then on)."""

    async def listening() -> bool:
        return client.app is not None and client.app[LIVE].listening

    await seconds_until(listening)
