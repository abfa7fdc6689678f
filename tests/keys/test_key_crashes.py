"""``kill -9`` of a real ``spacesvc serve`` at each step of minting and rotating an environment's
key (docs/keys.md, "Crash safety"): after one ``spacesvc keys reconcile``, no live key is left at
the issuer that spacesvc holds no record of, and no environment is delivered a key that does not
exist.

The moment is chosen with the database: a trigger holds the statement that makes the minted key
the delivered one, so the service is killed after the issuer answered and before the secret is
stored; a slow issuer holds the mint before it answered."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import asyncpg
import pytest

from tests.keys.test_environment_keys import ISSUER, OTHER, OWN, TOKEN, rotate_path
from tests.support.api import SPACES, SPACES_ENVIRONMENTS, Tokens, auth, credentials_path
from tests.support.cli import run, service_env
from tests.support.postgres import free_port
from tests.support.s3 import AccessKey, MotoS3
from tests.support.service import Serve
from tests.support.spaces_keys import SpacesKeysApi

# Holds the activation of a minted key: the service is killed meanwhile.
HOLD_ACTIVATION = """
CREATE FUNCTION hold_activation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(3); RETURN NEW; END $$;
CREATE TRIGGER hold_activation BEFORE UPDATE ON environment_keys
    FOR EACH ROW WHEN (NEW.state = 'active' AND OLD.state = 'minting') EXECUTE FUNCTION hold_activation();
"""
RELEASE = "DROP TRIGGER hold_activation ON environment_keys; DROP FUNCTION hold_activation();"
# What the reconciliation would see once a crashed mint's grace has passed (docs/keys.md).
AGE_MINTING_ROWS = "UPDATE environment_keys SET created_at = created_at - interval '1 minute' WHERE state = 'minting'"


async def eventually(check: Callable[[], Awaitable[bool] | bool], limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while True:
        outcome = check()
        if await outcome if not isinstance(outcome, bool) else outcome:
            return
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.05)


class Service:
    """``spacesvc serve`` on the test's database with the stand-in as its digitalocean issuer."""

    def __init__(self, database_url: str, api: SpacesKeysApi, prefix: str) -> None:
        self.env = service_env(
            database_url, SPACESVC_DIGITALOCEAN_API_URL=api.url, SPACESVC_KEY_PREFIX=prefix, SPACESVC_LOG_LEVEL="INFO"
        )
        self.server = Serve(self.env, free_port())
        self.url = self.server.url

    def restart(self) -> None:
        self.server = Serve(self.env, free_port())
        self.url = self.server.url

    async def reconcile(self) -> str:
        done = await asyncio.to_thread(run, "keys", "reconcile", env=self.env)
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture
async def spaces_api(s3: MotoS3) -> AsyncIterator[SpacesKeysApi]:
    async with SpacesKeysApi(s3, TOKEN) as api:
        yield api


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def service(database_url: str, spaces_api: SpacesKeysApi) -> AsyncIterator[Service]:
    running = Service(database_url, spaces_api, f"t{uuid.uuid4().hex[:8]}-")
    yield running
    running.server.stop()


async def prepare(http: aiohttp.ClientSession, service: Service, s3: MotoS3, tokens: Tokens) -> tuple[dict, str]:
    """The configuration on moto, the stand-in as issuer, and an environment "web"; returns the
    admin's headers and the environment's id."""
    admin = auth(await tokens.create("admin", name="admin-token"))
    full = s3.keys["full"]
    config = {"accessKey": full.access_key, "secretKey": full.secret_key, "endpoint": s3.url, "buckets": [OWN, OTHER]}
    async with http.put(service.url + SPACES, json=config, headers=admin) as resp:
        assert resp.status == 201
    async with http.put(service.url + ISSUER, json={"type": "digitalocean", "apiToken": TOKEN}, headers=admin) as resp:
        assert resp.status == 201
    async with http.post(service.url + "/api/environments", json={"name": "web"}, headers=admin) as resp:
        environment_id = str((await resp.json())["environment"]["id"])
    await asyncio.to_thread(s3.client("s3", full).put_object, Bucket=OWN, Key="readable", Body=b"data")
    return admin, environment_id


def prefixed(api: SpacesKeysApi, service: Service) -> list[str]:
    prefix = service.env["SPACESVC_KEY_PREFIX"]
    return sorted(key.access_key for key in api.keys.values() if key.name.startswith(prefix))


async def test_kill_after_the_issuer_answered_and_before_the_secret_is_stored_leaves_nothing_after_reconcile(
    service: Service,
    spaces_api: SpacesKeysApi,
    http: aiohttp.ClientSession,
    s3: MotoS3,
    tokens: Tokens,
    conn: asyncpg.Connection,
) -> None:
    admin, environment_id = await prepare(http, service, s3, tokens)
    await conn.execute(HOLD_ACTIVATION)
    enabling = asyncio.ensure_future(
        http.put(f"{service.url}{SPACES_ENVIRONMENTS}/{environment_id}", json={"enabled": True}, headers=admin)
    )
    await eventually(lambda: bool(prefixed(spaces_api, service)))  # the issuer answered
    service.server.kill()
    with pytest.raises(aiohttp.ClientError):
        await enabling
    await conn.execute(RELEASE)
    orphan = prefixed(spaces_api, service)
    assert len(orphan) == 1 and await conn.fetchval("SELECT state FROM environment_keys") == "minting"
    await conn.execute(AGE_MINTING_ROWS)
    said = await service.reconcile()
    assert "1 deleted" in said
    assert prefixed(spaces_api, service) == [] and await conn.fetchval("SELECT count(*) FROM environment_keys") == 0
    # the environment was never enabled: nothing is delivered, and enabling again works
    service.restart()
    async with http.get(f"{service.url}{SPACES_ENVIRONMENTS}", headers=admin) as resp:
        assert (await resp.json())["environments"][0]["spacesEnabled"] is False
    async with http.put(
        f"{service.url}{SPACES_ENVIRONMENTS}/{environment_id}", json={"enabled": True}, headers=admin
    ) as resp:
        assert resp.status == 200
    assert len(prefixed(spaces_api, service)) == 1


async def test_kill_while_the_issuer_has_not_answered_yet_leaves_nothing_after_reconcile(
    service: Service,
    spaces_api: SpacesKeysApi,
    http: aiohttp.ClientSession,
    s3: MotoS3,
    tokens: Tokens,
    conn: asyncpg.Connection,
) -> None:
    admin, environment_id = await prepare(http, service, s3, tokens)
    spaces_api.delay = 2.0
    enabling = asyncio.ensure_future(
        http.put(f"{service.url}{SPACES_ENVIRONMENTS}/{environment_id}", json={"enabled": True}, headers=admin)
    )
    await eventually(lambda: any(method == "POST" for method, _ in spaces_api.requests))
    service.server.kill()
    with pytest.raises(aiohttp.ClientError):
        await enabling
    await eventually(lambda: bool(prefixed(spaces_api, service)), limit=10)  # the answer nobody read
    spaces_api.delay = 0.0
    await conn.execute(AGE_MINTING_ROWS)
    await service.reconcile()
    assert prefixed(spaces_api, service) == [] and await conn.fetchval("SELECT count(*) FROM environment_keys") == 0


async def test_kill_during_a_rotation_keeps_the_old_key_delivered_and_working_and_reconcile_removes_the_new_one(
    service: Service,
    spaces_api: SpacesKeysApi,
    http: aiohttp.ClientSession,
    s3: MotoS3,
    tokens: Tokens,
    conn: asyncpg.Connection,
) -> None:
    admin, environment_id = await prepare(http, service, s3, tokens)
    async with http.put(
        f"{service.url}{SPACES_ENVIRONMENTS}/{environment_id}", json={"enabled": True, "buckets": [OWN]}, headers=admin
    ) as resp:
        assert resp.status == 200
    workload = auth(await tokens.create("viewer", ("spaces:credentials",), name="web-workload", environment="web"))
    async with http.get(service.url + credentials_path(environment_id), headers=workload) as resp:
        old = await resp.json()
    await conn.execute(HOLD_ACTIVATION)
    rotating = asyncio.ensure_future(http.post(service.url + rotate_path(environment_id), headers=admin))
    await eventually(lambda: len(prefixed(spaces_api, service)) == 2)
    service.server.kill()
    with pytest.raises(aiohttp.ClientError):
        await rotating
    await conn.execute(RELEASE)
    await conn.execute(AGE_MINTING_ROWS)
    await service.reconcile()
    assert prefixed(spaces_api, service) == [old["accessKey"]]
    listed = await asyncio.to_thread(run, "keys", "list", env=service.env)
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert [(row[0], row[2], row[3]) for row in rows] == [("web", "active", old["accessKey"])]
    assert old["secretKey"] not in listed.stdout + listed.stderr
    service.restart()
    async with http.get(service.url + credentials_path(environment_id), headers=workload) as resp:
        delivered = await resp.json()
    assert delivered["accessKey"] == old["accessKey"]
    assert await s3.allows(AccessKey(delivered["accessKey"], delivered["secretKey"]), "read", OWN)
