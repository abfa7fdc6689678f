"""Every key the service stores on the application and on requests, in one place.

Keys only: the types are imported for the type checker alone, so importing this module loads
nothing else of the service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    import asyncio

    import asyncpg

    from backends import SecretBackend
    from spacesvc.http.idempotency import FingerprintKey
    from spacesvc.http.ratelimit import RateLimits
    from spacesvc.lifecycle import Lifecycle
    from spacesvc.live import LiveState
    from spacesvc.s3 import S3Client
    from spacesvc.settings import Settings
    from spacesvc.tokens.model import Principal

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
POOL: web.AppKey[asyncpg.Pool] = web.AppKey("pool")
POOL_TURNS: web.AppKey[asyncio.Semaphore] = web.AppKey("pool_turns")
SECRET_BACKEND: web.AppKey[SecretBackend] = web.AppKey("secret_backend")
RATE_LIMITS: web.AppKey[RateLimits] = web.AppKey("rate_limits")
S3: web.AppKey[S3Client] = web.AppKey("s3")
FINGERPRINT_KEY: web.AppKey[FingerprintKey] = web.AppKey("idempotency_fingerprint_key")
LIVE: web.AppKey[LiveState] = web.AppKey("live_state")
LIFECYCLE: web.AppKey[Lifecycle] = web.AppKey("lifecycle")
# /readyz: the failing detail last logged per check (None: passing), to log changes only
READINESS_REPORTED: web.AppKey[dict[str, str | None]] = web.AppKey("readiness_reported")

REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id")
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal")
