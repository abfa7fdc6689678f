"""A value computed at most once per interval however often it is asked: what the probes
(``/readyz``, ``/metrics``) answer, so that hammering them costs one computation a second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Recent(Generic[T]):
    """The last value of ``compute`` while it is younger than ``seconds`` and was computed for the
    same ``key`` (a different key, e.g. a changed configuration, computes again); callers that come
    while it is being computed share that computation."""

    def __init__(self, seconds: float = 1.0) -> None:
        self._seconds = seconds
        self._at = 0.0
        self._key: object = None
        self._value: T | None = None
        self._running: asyncio.Future[T] | None = None

    async def get(self, compute: Callable[[], Awaitable[T]], key: object = None) -> T:
        if self._value is not None and self._key == key and time.monotonic() - self._at < self._seconds:
            return self._value
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._compute(compute, key))
        return await asyncio.shield(self._running)

    async def _compute(self, compute: Callable[[], Awaitable[T]], key: object) -> T:
        value = await compute()
        self._value, self._key, self._at = value, key, time.monotonic()
        return value
