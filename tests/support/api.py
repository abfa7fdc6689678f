"""What tests of the HTTP API share: the routes, a valid body, the envelope check, tokens."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Protocol

import asyncpg
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from spacesvc.audit.model import Actor
from spacesvc.environments import queries as environments
from spacesvc.http.errors import ErrorCode
from spacesvc.settings import Settings
from spacesvc.tokens.model import ADMIN_SCOPES, parse_duration
from spacesvc.tokens.queries import create_token
from tests.support.secrecy import SECRET

SPACES = "/api/settings/spaces"
TEST = "/api/settings/spaces/test"
BUCKETS = "/api/settings/spaces/buckets"
ENVIRONMENTS = "/api/environments"
SPACES_ENVIRONMENTS = "/api/settings/spaces/environments"
AUDIT = "/api/audit"


def credentials_path(environment_id: str) -> str:
    return f"{ENVIRONMENTS}/{environment_id}/spaces/credentials"


BODY = {"accessKey": "DO00EXAMPLEKEY", "secretKey": SECRET, "region": "ams3", "buckets": ["backups", "media.assets"]}

REQUEST_ID = re.compile(r"^req_[0-9A-HJKMNP-TV-Z]{26}$")


class MakeClient(Protocol):
    """Start the app for ``settings`` on a real socket; ``setup`` may add routes first."""

    async def __call__(
        self, settings: Settings, setup: Callable[[web.Application], object] | None = None
    ) -> TestClient: ...


async def assert_envelope(resp: ClientResponse, status: int, code: str) -> dict:
    """The response is error envelope of docs/api.md with this status and code; returns its body."""
    assert resp.status == status
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert body["code"] in {c.value for c in ErrorCode}
    assert REQUEST_ID.match(body["requestId"])
    assert resp.headers["X-Request-ID"] == body["requestId"]
    return body


class AuthHeaders(dict[str, str]):
    """``{"Authorization": "Bearer <token>"}`` whose repr hides the token.

    pytest prints a failing test's arguments; the token must not be among what it prints.
    """

    def __repr__(self) -> str:
        return "{'Authorization': 'Bearer <hidden>'}"


def auth(token: str) -> AuthHeaders:
    return AuthHeaders({"Authorization": f"Bearer {token}"})


class Tokens:
    """Creates API tokens in the test's database, as `spacesvc tokens create` does."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._count = 0

    async def create(
        self,
        role: str = "admin",
        scopes: tuple[str, ...] = ADMIN_SCOPES,
        name: str | None = None,
        expires_in: str | None = None,
        environment: str | None = None,
    ) -> str:
        """A token; ``environment`` (a name or id) binds it, as --environment does."""
        self._count += 1
        conn = await asyncpg.connect(self.database_url)
        try:
            token, _ = await create_token(
                conn,
                name=name or f"{role}-{self._count}",
                role=role,
                scopes=list(scopes),
                expires_in=parse_duration(expires_in) if expires_in else None,
                environment=await environments.find(conn, environment) if environment else None,
                actor=Actor("tests"),
            )
        finally:
            await conn.close()
        return token


async def create_environment(client: TestClient, admin: dict[str, str], name: str) -> str:
    """Create an environment through the API; returns its id."""
    resp = await client.post(ENVIRONMENTS, json={"name": name}, headers=admin)
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["environment"]["id"])


async def enable(client: TestClient, admin: dict[str, str], environment_id: str, enabled: bool = True) -> None:
    resp = await client.put(f"{SPACES_ENVIRONMENTS}/{environment_id}", json={"enabled": enabled}, headers=admin)
    assert resp.status == 200, await resp.text()


async def readiness(client: TestClient, status: int, headers: dict[str, str] | None = None, limit: float = 3.0) -> dict:
    """/readyz's body once it answers ``status``: it is computed at most once a second, so a change
    shows within about a second. ``headers``: an admin token's, for the secret backend's detail."""
    deadline = time.monotonic() + limit
    while True:
        resp = await client.get("/readyz", headers=headers or {})
        if resp.status == status or time.monotonic() > deadline:
            assert resp.status == status, await resp.text()
            return dict(await resp.json())
        await asyncio.sleep(0.1)
