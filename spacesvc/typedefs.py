"""Every key the service stores on the application and on requests, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from backends import SecretBackend
from spacesvc.ratelimit import RateLimits
from spacesvc.settings import Settings
from spacesvc.storage import StorageClient
from spacesvc.tokens import Principal

if TYPE_CHECKING:
    from spacesvc.idempotency import FingerprintKey

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
SECRET_BACKEND = web.AppKey("secret_backend", SecretBackend)
RATE_LIMITS = web.AppKey("rate_limits", RateLimits)
STORAGE = web.AppKey("storage", StorageClient)
FINGERPRINT_KEY: web.AppKey[FingerprintKey] = web.AppKey("idempotency_fingerprint_key")

REQUEST_ID = web.RequestKey("request_id", str)
PRINCIPAL = web.RequestKey("principal", Principal)
