"""The secret of the configuration in memory, for credential deliveries.

Every delivery needs the configuration's secret; read from the backend each time, a Vault round
trip through the thread pool was the cost of a delivery. Here the secret read for a configuration
object the live state hands out (it hands out a new one when the configuration changes) is kept
for as long as the backend allows (``SecretBackend.secret_kept_seconds``): for the whole version
where the secret changes only with it, for a bound the operator sets where it can change behind
the service's back (vault: ``SPACESVC_VAULT_SECRET_CACHE``; docs/guarantees.md). A read that
finds nothing kept borrows a pool connection; concurrent deliveries that find nothing kept share
that one read (not when the backend allows no keeping at all).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from backends import SecretBackend
from spacesvc.spaces.model import SpacesConfig


class SecretMemory:
    """One kept secret and one read in flight, both for a (configuration object, backend) pair."""

    def __init__(self) -> None:
        self._kept: tuple[SpacesConfig, SecretBackend, str, float] | None = None
        self._reading: tuple[SpacesConfig, SecretBackend, asyncio.Future[str | None]] | None = None

    async def secret(
        self, config: SpacesConfig, backend: SecretBackend, read: Callable[[], Awaitable[str | None]]
    ) -> str | None:
        """The secret of ``config``: kept, or got with ``read`` (None: none is stored)."""
        kept_for = backend.secret_kept_seconds
        kept = self._kept
        if kept is not None and kept[0] is config and kept[1] is backend and time.monotonic() - kept[3] < kept_for:
            return kept[2]
        if kept_for <= 0:
            return await read()
        reading = self._reading
        if reading is None or reading[0] is not config or reading[1] is not backend or reading[2].done():
            # counted from before the read: what it returns may be that old when it arrives
            started = time.monotonic()
            future = asyncio.ensure_future(read())
            future.add_done_callback(lambda done: self._keep(done, config, backend, started))
            reading = self._reading = (config, backend, future)
        # a request that leaves (its client gone) does not cancel the read the others share
        return await asyncio.shield(reading[2])

    def _keep(self, done: asyncio.Future[str | None], config: SpacesConfig, backend: SecretBackend, at: float) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        secret = done.result()
        if secret is not None:
            self._kept = (config, backend, secret, at)
