"""/healthz and /readyz: fast, truthful, and naming what fails."""

from __future__ import annotations

import json
import os

import asyncpg
from aiohttp.test_utils import TestClient

from backends.db import DbSettings, EncryptionKey
from backends.env import EnvSettings
from spacesvc.settings import Settings
from tests.support.api import BODY, SPACES, MakeClient, assert_envelope, readiness
from tests.support.logs import ServerLog
from tests.support.secrecy import SECRET


async def test_healthz_is_ok(client: TestClient) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}


async def test_readyz_is_ready_with_every_check_named(client: TestClient) -> None:
    resp = await client.get("/readyz")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "migrations", "secret_backend"}
    assert all(check["ok"] for check in body["checks"].values())


async def test_a_secret_whose_key_is_missing_fails_readiness_with_a_log_line(
    client: TestClient, admin: dict, make_client: MakeClient, settings: Settings, server_log: ServerLog
) -> None:
    assert (await client.put(SPACES, json=BODY, headers=admin)).status == 201
    new_key = EncryptionKey("k2", os.urandom(32))
    rekeyed = await make_client(settings.with_changes(secrets=DbSettings((new_key,))))

    resp = await rekeyed.get("/readyz", headers=admin)  # the detail is an admin's
    body = await assert_envelope(resp, 503, "SERVICE_UNAVAILABLE")
    check = body["checks"]["secret_backend"]
    assert check["ok"] is False and "'k1'" in check["detail"]
    logged = [json.loads(line) for line in server_log.lines]
    assert any(line["logger"] == "spacesvc.readiness" and "'k1'" in line["msg"] for line in logged)

    # the configuration stays readable, and a new secret is how the operator recovers
    config = (await (await rekeyed.get(SPACES, headers=admin)).json())["config"]
    assert config["hasSecretKey"] is True
    resp = await rekeyed.patch(SPACES, json={"secretKey": SECRET + "-new"}, headers=admin)
    assert resp.status == 200
    await readiness(rekeyed, 200)


async def test_a_secret_left_in_another_backend_fails_readiness_and_is_not_relabelled(
    client: TestClient, admin: dict, make_client: MakeClient, settings: Settings, conn: asyncpg.Connection
) -> None:
    assert (await client.put(SPACES, json=BODY, headers=admin)).status == 201
    switched = await make_client(settings.with_changes(secrets=EnvSettings("from-env-value")))

    body = await assert_envelope(await switched.get("/readyz", headers=admin), 503, "SERVICE_UNAVAILABLE")
    detail = body["checks"]["secret_backend"]["detail"]
    assert "set SPACESVC_SECRET_BACKEND=db here and restart" in detail
    assert "migrate --to env" not in detail  # env is read-only: no command can move a secret there

    # a change of the other fields keeps the row pointing at where its secret really is
    resp = await switched.patch(SPACES, json={"region": "nyc3"}, headers=admin)
    assert resp.status == 200 and (await resp.json())["config"]["secretBackend"] == "db"
    assert await conn.fetchval("SELECT count(*) FROM secret_ciphertexts") == 1
    assert (await client.get("/readyz")).status == 200
