"""The probes cost one computation a second however often they are asked, and /readyz without
an admin token says which check fails without a secret backend's detail (key ids, mount paths,
policy text)."""

from __future__ import annotations

import asyncio
import os

import asyncpg
from aiohttp.test_utils import TestClient

from backends.db import DbSettings, EncryptionKey
from spacesvc.settings import RateBudget, Settings
from tests.support.api import BODY, SPACES, MakeClient, assert_envelope, auth
from tests.support.timing import until_listening


async def test_readyz_is_computed_at_most_once_a_second(
    client: TestClient, conn: asyncpg.Connection, admin: dict
) -> None:
    await until_listening(client)
    assert (await client.get("/readyz")).status == 200
    await conn.execute("DELETE FROM schema_migrations WHERE version = (SELECT max(version) FROM schema_migrations)")
    answers = await asyncio.gather(*(client.get("/readyz") for _ in range(20)))
    assert [answer.status for answer in answers] == [200] * 20  # the check of a moment ago
    # writes meanwhile (each a notification) do not make it computed more often
    assert (await client.put(SPACES, json=BODY, headers=admin)).status == 201
    assert (await client.patch(SPACES, json={"buckets": ["archive"]}, headers=admin)).status == 200
    assert (await client.get("/readyz")).status == 200
    await asyncio.sleep(1.1)
    body = await assert_envelope(await client.get("/readyz"), 503, "SERVICE_UNAVAILABLE")
    assert body["checks"]["migrations"]["ok"] is False


async def test_metrics_is_rendered_at_most_once_a_second(client: TestClient, admin: dict) -> None:
    first = await (await client.get("/metrics")).read()
    for _ in range(5):
        await client.get(SPACES, headers=admin)
    assert await (await client.get("/metrics")).read() == first
    await asyncio.sleep(1.1)
    assert await (await client.get("/metrics")).read() != first


async def test_readyz_without_an_admin_token_names_the_failing_check_but_no_key_id(
    client: TestClient, admin: dict, viewer: dict, make_client: MakeClient, settings: Settings
) -> None:
    healthy = await (await client.get("/readyz")).text()
    assert "k1" not in healthy
    assert (await client.put(SPACES, json=BODY, headers=admin)).status == 201
    rekeyed = await make_client(settings.with_changes(secrets=DbSettings((EncryptionKey("k2", os.urandom(32)),))))
    for headers in ({}, viewer, auth("sps_" + "w" * 43)):
        body = await assert_envelope(await rekeyed.get("/readyz", headers=headers), 503, "SERVICE_UNAVAILABLE")
        check = body["checks"]["secret_backend"]
        assert check["ok"] is False and "not usable" in check["detail"] and "log" in check["detail"]
        assert "k1" not in str(body) and "k2" not in str(body)
        assert body["message"] == "Not ready: secret_backend failing."
    body = await assert_envelope(await rekeyed.get("/readyz", headers=admin), 503, "SERVICE_UNAVAILABLE")
    assert "'k1'" in body["checks"]["secret_backend"]["detail"]


async def test_a_wrong_token_on_readyz_spends_the_failure_budget(make_client: MakeClient, settings: Settings) -> None:
    client = await make_client(settings.with_changes(auth_failure_limit=RateBudget(3, 60)))
    for _ in range(3):
        assert (await client.get("/readyz", headers=auth("sps_" + "g" * 43))).status == 200
    await assert_envelope(await client.get(SPACES, headers=auth("sps_" + "h" * 43)), 429, "RATE_LIMITED")
