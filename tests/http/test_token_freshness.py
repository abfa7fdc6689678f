"""A token revoked or expired by any means (an UPDATE typed in psql included) stops working at
once, and within a minute even if the notification is lost; a held watch whose token is revoked
ends with 401. Unknown tokens cost PostgreSQL little: an address past its failure budget is
answered before any lookup, and an unknown token is remembered as unknown."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from spacesvc import live
from spacesvc.instruments import CACHE_READS
from spacesvc.settings import RateBudget, Settings
from tests.support.api import BODY, ENVIRONMENTS, SPACES, MakeClient, Tokens, assert_envelope, auth
from tests.support.timing import seconds_until, until_listening


def database_reads() -> float:
    return CACHE_READS.labels("database")._value.get()


async def refused(client: TestClient, headers: dict) -> bool:
    return (await client.get(SPACES, headers=headers)).status == 401


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE api_tokens SET revoked_at = now() WHERE name = 'viewer-token'",
        "UPDATE api_tokens SET expires_at = now() WHERE name = 'viewer-token'",
        "DELETE FROM api_tokens WHERE name = 'viewer-token'",
    ],
)
async def test_a_token_changed_in_psql_is_refused_within_a_second(
    client: TestClient, viewer: dict, conn: asyncpg.Connection, statement: str
) -> None:
    await until_listening(client)
    assert (await client.get(SPACES, headers=viewer)).status == 200  # known in memory now
    await conn.execute(statement)
    took = await seconds_until(lambda: refused(client, viewer), limit=1.0)
    print(f"refused {took * 1000:.0f} ms after the commit")


async def test_a_revocation_whose_notification_is_lost_shows_on_the_next_recheck(
    client: TestClient, viewer: dict, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In production the tokens are read again every 30 s (at most a minute's delay); shortened here."""
    monkeypatch.setattr(live, "TOKENS_RECHECK_SECONDS", 1.0)
    await until_listening(client)
    assert (await client.get(SPACES, headers=viewer)).status == 200
    async with conn.transaction():
        await conn.execute("ALTER TABLE api_tokens DISABLE TRIGGER api_tokens_changed")  # no notification
        await conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE name = 'viewer-token'")
        await conn.execute("ALTER TABLE api_tokens ENABLE TRIGGER api_tokens_changed")
    await seconds_until(lambda: refused(client, viewer), limit=3.0)


async def test_a_held_watch_ends_with_401_when_its_token_is_revoked(
    client: TestClient, admin: dict, viewer: dict, conn: asyncpg.Connection
) -> None:
    await until_listening(client)
    created = await client.put(SPACES, json=BODY, headers=admin)
    watch = asyncio.create_task(
        client.get(SPACES, headers={**viewer, "If-None-Match": created.headers["ETag"], "Prefer": "wait=30"})
    )
    await asyncio.sleep(0.3)
    assert not watch.done()
    await conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE name = 'viewer-token'")
    resp = await asyncio.wait_for(watch, 2.0)
    await assert_envelope(resp, 401, "UNAUTHORIZED")


async def test_a_held_watch_ends_with_401_when_its_token_expires(
    client: TestClient, admin: dict, tokens: Tokens
) -> None:
    """No notification announces an expiry: the watch wakes for it by itself."""
    await until_listening(client)
    created = await client.put(SPACES, json=BODY, headers=admin)
    short_lived = auth(await tokens.create("viewer", ("settings:read",), name="short-lived", expires_in="2s"))
    started = time.monotonic()
    resp = await asyncio.wait_for(
        client.get(SPACES, headers={**short_lived, "If-None-Match": created.headers["ETag"], "Prefer": "wait=30"}),
        10.0,
    )
    await assert_envelope(resp, 401, "UNAUTHORIZED")
    assert time.monotonic() - started < 5.0  # at its expiry, not at the end of its 30 s wait


async def test_an_address_past_its_failure_budget_is_answered_before_any_lookup(
    make_client: MakeClient, settings: Settings, admin: dict
) -> None:
    client = await make_client(settings.with_changes(auth_failure_limit=RateBudget(3, 60)))
    await until_listening(client)
    assert (await client.get(SPACES, headers=admin)).status == 200
    guesses = [auth(f"sps_{n:043d}") for n in range(3)]
    for guess in guesses:
        await assert_envelope(await client.get(SPACES, headers=guess), 401, "UNAUTHORIZED")
    before = database_reads()
    for n in range(10):
        resp = await client.get(SPACES, headers=auth(f"sps_{n + 100:043d}"))
        await assert_envelope(resp, 429, "RATE_LIMITED")
    assert database_reads() == before
    assert (await client.get(SPACES, headers=admin)).status == 200  # a known token is still served


async def test_an_unknown_token_is_remembered_as_unknown(client: TestClient, admin: dict) -> None:
    await until_listening(client)
    await asyncio.sleep(0.3)  # the notification of the admin token's creation has arrived
    assert (await client.get(SPACES, headers=admin)).status == 200  # every token read into memory
    guess = auth("sps_" + "u" * 43)
    before = database_reads()
    for _ in range(5):
        await assert_envelope(await client.get(SPACES, headers=guess), 401, "UNAUTHORIZED")
    assert database_reads() - before == 1


async def test_token_lookups_take_at_most_half_of_the_pool(
    make_client: MakeClient, settings: Settings, admin: dict, conn: asyncpg.Connection
) -> None:
    """Guessed tokens whose lookups hang (here: api_tokens locked) leave the other half of the pool
    to everyone else."""
    client = await make_client(settings.with_changes(db_pool_max_size=4))
    await until_listening(client)
    await asyncio.sleep(0.3)  # the notification of the admin token's creation has arrived
    assert (await client.get(ENVIRONMENTS, headers=admin)).status == 200  # every token read into memory
    async with conn.transaction():
        await conn.execute("LOCK TABLE api_tokens IN ACCESS EXCLUSIVE MODE")
        guesses = [asyncio.create_task(client.get(SPACES, headers=auth(f"sps_{n:043d}"))) for n in range(8)]
        await asyncio.sleep(0.3)
        resp = await asyncio.wait_for(client.get(ENVIRONMENTS, headers=admin), 5.0)
        assert resp.status == 200
    assert {(await guess).status for guess in guesses} <= {401, 503}
