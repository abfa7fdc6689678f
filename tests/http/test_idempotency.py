"""Idempotency-Key (docs/api.md): replay, reuse, scoping, failures, concurrency, crash takeover."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from spacesvc.http.authorization import ADMIN, WRITE
from spacesvc.http.idempotency import delete_expired, run_idempotently
from spacesvc.http.pipeline import Policy, Roles, add_route
from spacesvc.settings import Settings
from spacesvc.tokens.model import hash_token
from tests.support.api import BODY, SPACES, MakeClient, Tokens, assert_envelope, auth
from tests.support.secrecy import SECRET, assert_hidden


def keyed(headers: dict, key: str) -> dict:
    return {**headers, "Idempotency-Key": key}


async def test_a_retry_with_the_same_key_and_body_is_replayed_verbatim(
    client: TestClient, admin: dict, conn: asyncpg.Connection
) -> None:
    first = await client.put(SPACES, json=BODY, headers=keyed(admin, "create-1"))
    assert first.status == 201 and "Idempotent-Replayed" not in first.headers
    again = await client.put(SPACES, json=BODY, headers=keyed(admin, "create-1"))
    assert again.status == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await again.read() == await first.read()
    assert again.headers["ETag"] == first.headers["ETag"]
    assert await conn.fetchval("SELECT version FROM spaces_config") == 1


async def test_the_same_key_with_another_body_is_idempotency_key_reused(client: TestClient, admin: dict) -> None:
    await client.put(SPACES, json=BODY, headers=keyed(admin, "k"))
    resp = await client.put(SPACES, json={**BODY, "region": "nyc3"}, headers=keyed(admin, "k"))
    body = await assert_envelope(resp, 409, "IDEMPOTENCY_KEY_REUSED")
    assert body["field"] == "Idempotency-Key"


async def test_keys_are_scoped_to_the_token(client: TestClient, tokens: Tokens, conn: asyncpg.Connection) -> None:
    first, second = auth(await tokens.create("admin")), auth(await tokens.create("admin"))
    assert (await client.put(SPACES, json=BODY, headers=keyed(first, "shared"))).status == 201
    other = await client.patch(SPACES, json={"region": "nyc3"}, headers=keyed(second, "shared"))
    assert other.status == 200 and "Idempotent-Replayed" not in other.headers
    assert await conn.fetchval("SELECT version FROM spaces_config") == 2


async def test_a_failed_request_is_not_kept_so_a_corrected_retry_proceeds(client: TestClient, admin: dict) -> None:
    bad = await client.put(SPACES, json={**BODY, "region": "NOT VALID"}, headers=keyed(admin, "fix-me"))
    assert bad.status == 400
    fixed = await client.put(SPACES, json=BODY, headers=keyed(admin, "fix-me"))
    assert fixed.status == 201 and "Idempotent-Replayed" not in fixed.headers


async def test_patch_and_delete_replay_too(client: TestClient, admin: dict, conn: asyncpg.Connection) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    for _ in range(2):
        resp = await client.patch(SPACES, json={"region": "sgp1"}, headers=keyed(admin, "p"))
        assert resp.status == 200
    assert await conn.fetchval("SELECT version FROM spaces_config") == 2
    first = await client.delete(SPACES, headers=keyed(admin, "d"))
    again = await client.delete(SPACES, headers=keyed(admin, "d"))
    assert (first.status, again.status) == (200, 200)
    assert again.headers["Idempotent-Replayed"] == "true" and await again.json() == {"success": True}


async def test_eight_concurrent_requests_with_one_key_execute_once(
    client: TestClient, admin: dict, conn: asyncpg.Connection
) -> None:
    await client.put(SPACES, json={**BODY, "buckets": []}, headers=admin)
    patch = {"buckets": ["only-once"], "secretKey": SECRET + "-rotated"}

    async def send() -> tuple[int, bool]:
        resp = await client.patch(SPACES, json=patch, headers=keyed(admin, "burst"))
        if resp.status == 409:
            body = await assert_envelope(resp, 409, "CONFLICT")
            assert int(resp.headers["Retry-After"]) >= 1 and body["field"] == "Idempotency-Key"
        return resp.status, resp.headers.get("Idempotent-Replayed") == "true"

    results = await asyncio.gather(*(send() for _ in range(8)))
    executed = [r for r in results if r == (200, False)]
    assert len(executed) == 1, results
    assert all(status in (200, 409) for status, _ in results)
    assert await conn.fetchval("SELECT version FROM spaces_config") == 2
    # once the first has finished, every retry is a replay
    resp = await client.patch(SPACES, json=patch, headers=keyed(admin, "burst"))
    assert resp.status == 200 and resp.headers["Idempotent-Replayed"] == "true"


async def test_a_claim_left_by_a_crashed_request_is_taken_over_after_the_bound(
    client: TestClient, admin: dict, tokens: Tokens, conn: asyncpg.Connection
) -> None:
    token = admin["Authorization"].removeprefix("Bearer ")
    token_id = await conn.fetchval("SELECT id FROM api_tokens WHERE token_hash = $1", hash_token(token))
    first = await client.put(SPACES, json=BODY, headers=keyed(admin, "crash"))
    assert first.status == 201
    # the same request again, as if its first attempt had crashed while in flight
    await conn.execute(
        "UPDATE idempotency_keys SET state = 'in_flight', status = NULL, body = NULL, "
        "locked_until = now() + interval '1 hour' WHERE token_id = $1",
        token_id,
    )
    held = await client.put(SPACES, json=BODY, headers=keyed(admin, "crash"))
    await assert_envelope(held, 409, "CONFLICT")
    await conn.execute(
        "UPDATE idempotency_keys SET locked_until = now() - interval '1 second' WHERE token_id = $1", token_id
    )
    taken = await client.put(SPACES, json=BODY, headers=keyed(admin, "crash"))
    assert taken.status == 200 and "Idempotent-Replayed" not in taken.headers


async def test_records_expire_after_24_hours(client: TestClient, admin: dict, conn: asyncpg.Connection) -> None:
    await client.put(SPACES, json=BODY, headers=keyed(admin, "old"))
    await conn.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
    assert await delete_expired(conn) == 1
    resp = await client.put(SPACES, json={**BODY, "region": "nyc3"}, headers=keyed(admin, "old"))
    assert resp.status == 200 and "Idempotent-Replayed" not in resp.headers


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "ünicode"])
async def test_a_malformed_key_is_a_validation_error_naming_the_header(
    client: TestClient, admin: dict, key: str
) -> None:
    resp = await client.put(SPACES, json=BODY, headers=keyed(admin, key))
    body = await assert_envelope(resp, 400, "VALIDATION_ERROR")
    assert body["field"] == "Idempotency-Key"


async def test_nothing_stored_for_a_key_reveals_the_secret(
    client: TestClient, admin: dict, conn: asyncpg.Connection
) -> None:
    await client.put(SPACES, json=BODY, headers=keyed(admin, "secret-check"))
    rows = await conn.fetch("SELECT * FROM idempotency_keys")
    assert len(rows) == 1
    stored = json.dumps([{k: str(v) for k, v in dict(r).items()} for r in rows])
    assert_hidden(stored, SECRET, SECRET.encode().hex(), where="idempotency records")
    assert len(rows[0]["fingerprint"]) == 32


async def test_a_claim_its_process_stopped_renewing_says_when_it_can_be_taken_over(
    client: TestClient, admin: dict, conn: asyncpg.Connection
) -> None:
    """After a crash the retry is told the truth: the claim's remaining lease, then it proceeds."""
    assert (await client.put(SPACES, json=BODY, headers=keyed(admin, "died"))).status == 201
    # what a process killed mid-request leaves: a claim in flight whose lease nobody renews
    await conn.execute(
        "UPDATE idempotency_keys SET state = 'in_flight', status = NULL, body = NULL, "
        "locked_until = now() + interval '2.5 seconds'"
    )
    held = await client.put(SPACES, json=BODY, headers=keyed(admin, "died"))
    await assert_envelope(held, 409, "CONFLICT")
    retry_after = int(held.headers["Retry-After"])
    assert retry_after == 3
    await asyncio.sleep(retry_after)
    taken = await client.put(SPACES, json=BODY, headers=keyed(admin, "died"))
    assert taken.status == 200 and "Idempotent-Replayed" not in taken.headers


async def test_a_request_running_longer_than_its_lease_keeps_its_claim(
    make_client: MakeClient, settings: Settings, admin: dict
) -> None:
    finished = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        async def handle() -> web.Response:
            await asyncio.sleep(3)
            finished.set()
            return web.json_response({"done": True})

        return await run_idempotently(request, handle)

    client = await make_client(
        settings.with_changes(idempotency_lease_seconds=1.0),
        lambda app: add_route(app, "POST", "/api/settings/slow", slow, Policy(Roles(ADMIN, WRITE))),
    )
    first = asyncio.create_task(client.post("/api/settings/slow", json={}, headers=keyed(admin, "long")))
    await asyncio.sleep(2.2)  # past two lease periods: only renewal keeps the claim
    retry = await client.post("/api/settings/slow", json={}, headers=keyed(admin, "long"))
    await assert_envelope(retry, 409, "CONFLICT")
    assert int(retry.headers["Retry-After"]) <= 1
    assert (await first).status == 200 and finished.is_set()
    replayed = await client.post("/api/settings/slow", json={}, headers=keyed(admin, "long"))
    assert replayed.headers["Idempotent-Replayed"] == "true"


async def test_a_used_key_on_a_method_the_route_does_not_allow_is_405(client: TestClient, admin: dict) -> None:
    assert (await client.put(SPACES, json=BODY, headers=keyed(admin, "k-405"))).status == 201
    resp = await client.post(SPACES, json=BODY, headers=keyed(admin, "k-405"))
    await assert_envelope(resp, 405, "VALIDATION_ERROR")


async def test_a_malformed_condition_is_a_400_even_with_a_key_already_used(client: TestClient, admin: dict) -> None:
    """Found by schemathesis: the replay used to answer before the headers were checked."""
    assert (await client.put(SPACES, json=BODY, headers=keyed(admin, "k-cond"))).status == 201
    resp = await client.put(SPACES, json=BODY, headers={**keyed(admin, "k-cond"), "If-None-Match": "AAA"})
    body = await assert_envelope(resp, 400, "VALIDATION_ERROR")
    assert body["field"] == "If-None-Match"


async def test_the_same_key_with_other_conditions_is_another_request(client: TestClient, admin: dict) -> None:
    assert (await client.put(SPACES, json=BODY, headers=keyed(admin, "k-if"))).status == 201
    resp = await client.put(SPACES, json=BODY, headers={**keyed(admin, "k-if"), "If-Match": '"7"'})
    await assert_envelope(resp, 409, "IDEMPOTENCY_KEY_REUSED")
    same = await client.put(SPACES, json=BODY, headers=keyed(admin, "k-if"))
    assert same.status == 201 and same.headers["Idempotent-Replayed"] == "true"
