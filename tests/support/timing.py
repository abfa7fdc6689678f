"""Waiting for a change to show, and how long it took."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def seconds_until(check: Callable[[], Awaitable[bool]], *, limit: float = 5.0) -> float:
    """Poll ``check`` until it holds; the seconds that took (``limit`` exceeded fails)."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > limit:
            raise AssertionError(f"the change did not show within {limit}s")
        await asyncio.sleep(0.002)
    return time.monotonic() - started
