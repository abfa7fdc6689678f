"""Watching the configuration (docs/guarantees.md, RFC 7240 Prefer: wait=N with If-None-Match): held until
the version changes, then 200, or 304 after N seconds; Preference-Applied says it was held."""

from __future__ import annotations

import asyncio
import time

from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

from spacesvc.settings import Settings
from tests.support.api import BODY, SPACES, MakeClient


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


async def test_watches_woken_by_another_replicas_write_share_one_database_read(
    make_client: MakeClient, settings: Settings, admin: dict
) -> None:
    """A change from another process drops the configuration from memory and wakes every held
    watch at once: they share one read of PostgreSQL instead of one each (docs/guarantees.md)."""
    here, elsewhere = await make_client(settings), await make_client(settings)
    assert (await here.put(SPACES, json=BODY, headers=admin)).status == 201
    assert (await elsewhere.get(SPACES, headers=admin)).status == 200
    held = {**admin, "If-None-Match": '"1"', "Prefer": "wait=20"}
    watches = [asyncio.create_task(here.get(SPACES, headers=held)) for _ in range(50)]
    await asyncio.sleep(0.5)
    assert not any(watch.done() for watch in watches)

    def database_reads() -> float:
        return REGISTRY.get_sample_value("spacesvc_cache_reads_total", {"source": "database"}) or 0.0

    before = database_reads()
    assert (await elsewhere.patch(SPACES, json={"buckets": ["archive"]}, headers=admin)).status == 200
    answers = await asyncio.gather(*watches)
    assert [resp.status for resp in answers] == [200] * 50
    assert {(await resp.json())["config"]["version"] for resp in answers} == {2}
    assert database_reads() - before <= 3  # the watches' one, and what the writer itself read
