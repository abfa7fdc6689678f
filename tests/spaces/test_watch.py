"""Watching the configuration (docs/guarantees.md, RFC 7240 Prefer: wait=N with If-None-Match): held until
the version changes, then 200, or 304 after N seconds; Preference-Applied says it was held."""

from __future__ import annotations

import asyncio
import time

from aiohttp.test_utils import TestClient

from tests.support.api import BODY, SPACES


async def test_a_watch_is_answered_when_the_version_changes(client: TestClient, admin: dict, viewer: dict) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    started = time.monotonic()
    watch = asyncio.create_task(client.get(SPACES, headers={**viewer, "If-None-Match": '"1"', "Prefer": "wait=20"}))
    await asyncio.sleep(0.5)
    assert not watch.done()  # held
    await client.patch(SPACES, json={"buckets": ["archive"]}, headers=admin)
    resp = await watch
    assert resp.status == 200 and time.monotonic() - started < 10
    assert resp.headers["Preference-Applied"] == "wait=20" and resp.headers["ETag"] == '"2"'
    assert (await resp.json())["config"]["buckets"] == ["archive"]


async def test_a_watch_without_a_change_is_a_304_after_its_wait(client: TestClient, admin: dict) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    started = time.monotonic()
    resp = await client.get(SPACES, headers={**admin, "If-None-Match": '"1"', "Prefer": "respond-async, wait=1"})
    assert resp.status == 304 and time.monotonic() - started >= 0.9
    assert resp.headers["Preference-Applied"] == "wait=1" and resp.headers["ETag"] == '"1"'


async def test_a_deleted_configuration_answers_a_watch_with_configured_false(client: TestClient, admin: dict) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    watch = asyncio.create_task(client.get(SPACES, headers={**admin, "If-None-Match": '"1"', "Prefer": "wait=20"}))
    await asyncio.sleep(0.3)
    await client.delete(SPACES, headers=admin)
    resp = await watch
    assert resp.status == 200 and await resp.json() == {"configured": False, "config": None}


async def test_a_stale_version_or_no_condition_is_answered_at_once(client: TestClient, admin: dict) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    await client.patch(SPACES, json={"region": "nyc3"}, headers=admin)
    for headers in ({"If-None-Match": '"1"', "Prefer": "wait=30"}, {"Prefer": "wait=30"}):
        started = time.monotonic()
        resp = await client.get(SPACES, headers={**admin, **headers})
        assert resp.status == 200 and time.monotonic() - started < 5
        assert "Preference-Applied" not in resp.headers
    # If-None-Match: * names no version to wait on
    resp = await client.get(SPACES, headers={**admin, "If-None-Match": "*", "Prefer": "wait=30"})
    assert resp.status == 304 and "Preference-Applied" not in resp.headers
    # a wait that cannot be understood is ignored, as RFC 7240 says
    resp = await client.get(SPACES, headers={**admin, "If-None-Match": '"2"', "Prefer": "wait=soon"})
    assert resp.status == 304 and "Preference-Applied" not in resp.headers
