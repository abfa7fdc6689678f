"""The secret backend as the service runs it: the one chosen by the settings, its calls counted.

``backends`` knows nothing of the service's metrics; each operation a backend implements is
wrapped here, on the instance the app holds, and counted in
``spacesvc_secret_backend_calls_total`` by outcome: ok, error (it raised), or unhealthy (its
health check said so).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from backends import Health, SecretBackend, create_backend
from spacesvc.instruments import BACKEND_CALLS
from spacesvc.settings import SETTINGS

log = logging.getLogger("spacesvc")

SECRET_BACKEND: web.AppKey[SecretBackend] = web.AppKey("secret_backend")

# The operations counted, whichever backend implements them (one that keeps an operation's
# default from SecretBackend, a no-op, is not counted for it).
COUNTED_OPERATIONS = ("read", "write", "delete", "purge", "health")
OUTCOMES = ("ok", "error", "unhealthy")


def counted(backend: SecretBackend) -> SecretBackend:
    """``backend``, each call of an operation it implements counted by outcome."""
    for operation in COUNTED_OPERATIONS:
        if getattr(type(backend), operation) is not getattr(SecretBackend, operation):
            setattr(backend, operation, _counted(backend.name, operation, getattr(backend, operation)))
    return backend


def _counted(backend: str, operation: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    calls = {outcome: BACKEND_CALLS.labels(backend, operation, outcome) for outcome in OUTCOMES}

    @functools.wraps(method)
    async def counting(*args: Any, **kwargs: Any) -> Any:
        try:
            result = await method(*args, **kwargs)
        except Exception:
            calls["error"].inc()
            raise
        calls["unhealthy" if isinstance(result, Health) and not result.ok else "ok"].inc()
        return result

    return counting


async def secret_backend_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the backend the settings choose, counted, started with the app and closed after it."""
    backend = counted(create_backend(app[SETTINGS].secrets))
    app[SECRET_BACKEND] = backend
    log.info("secret backend: %s", backend.name)
    await backend.start()
    try:
        yield
    finally:
        await backend.close()
