"""Concurrent writers never lose an update: each effective change bumps version exactly once."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient

from tests.support.api import BODY, SPACES


async def test_concurrent_patches_serialize_and_each_bumps_version_once(client: TestClient, admin: dict) -> None:
    await client.put(SPACES, json={**BODY, "buckets": []}, headers=admin)

    async def set_access_key(i: int) -> int:
        resp = await client.patch(SPACES, json={"accessKey": f"KEY-{i:02d}"}, headers=admin)
        assert resp.status == 200
        return (await resp.json())["config"]["version"]

    versions = await asyncio.gather(*(set_access_key(i) for i in range(20)))
    assert sorted(versions) == list(range(2, 22))
    final = (await (await client.get(SPACES, headers=admin)).json())["config"]
    assert final["version"] == 21


async def test_concurrent_first_puts_create_exactly_once(client: TestClient, admin: dict) -> None:
    async def put(i: int) -> tuple[int, dict]:
        resp = await client.put(SPACES, json={**BODY, "accessKey": f"KEY-{i}"}, headers=admin)
        return resp.status, (await resp.json())["config"]

    results = await asyncio.gather(*(put(i) for i in range(10)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 9 + [201]
    assert len({config["id"] for _, config in results}) == 1
    assert sorted(config["version"] for _, config in results) == list(range(1, 11))
    final = (await (await client.get(SPACES, headers=admin)).json())["config"]
    assert final["version"] == 10
    assert final["accessKey"] == next(c["accessKey"] for _, c in results if c["version"] == 10)


async def test_twenty_read_modify_write_clients_with_if_match_lose_no_bucket(client: TestClient, admin: dict) -> None:
    """20 clients, each adding one bucket, retrying on 412."""
    await client.put(SPACES, json={**BODY, "buckets": []}, headers=admin)
    retries = 0

    async def add_bucket(name: str) -> None:
        nonlocal retries
        while True:
            resp = await client.get(SPACES, headers=admin)
            config = (await resp.json())["config"]
            patched = await client.patch(
                SPACES,
                json={"buckets": [*config["buckets"], name]},
                headers={**admin, "If-Match": resp.headers["ETag"]},
            )
            if patched.status == 200:
                return
            assert patched.status == 412
            retries += 1

    names = [f"client-{i:02d}" for i in range(20)]
    await asyncio.gather(*(add_bucket(n) for n in names))
    final = (await (await client.get(SPACES, headers=admin)).json())["config"]
    assert sorted(final["buckets"]) == names
    assert final["version"] == 21
    print(f"20 read-modify-write clients: {retries} retries after 412, final version {final['version']}")


async def test_fifty_blind_concurrent_puts_leave_a_state_equal_to_one_of_them(client: TestClient, admin: dict) -> None:
    bodies = [{**BODY, "accessKey": f"KEY-{i:02d}", "buckets": [f"bucket-{i:02d}"]} for i in range(50)]

    async def put(body: dict) -> tuple[int, dict]:
        resp = await client.put(SPACES, json=body, headers=admin)
        payload = await resp.json()
        assert resp.content_type == "application/json"
        return resp.status, payload

    results = await asyncio.gather(*(put(body) for body in bodies))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 49 + [201]
    assert sorted(payload["config"]["version"] for _, payload in results) == list(range(1, 51))
    final = (await (await client.get(SPACES, headers=admin)).json())["config"]
    assert final["version"] == 50
    assert {"accessKey": final["accessKey"], "buckets": final["buckets"]} in [
        {"accessKey": b["accessKey"], "buckets": b["buckets"]} for b in bodies
    ]
    last = next(p["config"] for _, p in results if p["config"]["version"] == 50)
    assert (last["accessKey"], last["buckets"]) == (final["accessKey"], final["buckets"])
