"""Every key the service stores on the application and on requests, in one place."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from backends import SecretBackend
from spacesvc.settings import Settings
from spacesvc.tokens import Principal

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
SECRET_BACKEND = web.AppKey("secret_backend", SecretBackend)

REQUEST_ID = web.RequestKey("request_id", str)
PRINCIPAL = web.RequestKey("principal", Principal)
