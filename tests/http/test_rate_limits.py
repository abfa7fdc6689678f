"""Rate limits: per token, per client address without one, a tighter budget for failed logins."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from spacesvc.errors import ConfigError
from spacesvc.settings import RateBudget, Settings
from tests.support.api import BODY, SPACES, MakeClient, Tokens, assert_envelope, auth

POLICY = re.compile(r'^"requests";q=(\d+);w=(\d+)$')
STATE = re.compile(r'^"requests";r=(\d+);t=(\d+)$')


def policy(resp: ClientResponse) -> tuple[str, ...]:
    """(quota, window) of the RateLimit-Policy field."""
    match = POLICY.match(resp.headers["RateLimit-Policy"])
    assert match, resp.headers["RateLimit-Policy"]
    return match.groups()


def remaining(resp: ClientResponse) -> str:
    """The requests left, from the RateLimit field."""
    match = STATE.match(resp.headers["RateLimit"])
    assert match, resp.headers["RateLimit"]
    return match[1]


async def limited(make_client: MakeClient, settings: Settings, requests: int, seconds: int) -> TestClient:
    return await make_client(settings.with_changes(rate_limit=RateBudget(requests, seconds)))


async def test_over_budget_is_429_with_retry_after_and_ratelimit_fields(
    make_client: MakeClient, settings: Settings, admin: dict
) -> None:
    client = await limited(make_client, settings, 3, 60)
    for expected_remaining in (2, 1, 0):
        resp = await client.get(SPACES, headers=admin)
        assert resp.status == 200
        assert policy(resp) == ("3", "60")
        assert int(remaining(resp)) == expected_remaining
    resp = await client.get(SPACES, headers=admin)
    body = await assert_envelope(resp, 429, "RATE_LIMITED")
    assert 1 <= int(resp.headers["Retry-After"]) <= 20
    assert POLICY.match(resp.headers["RateLimit-Policy"])
    assert remaining(resp) == "0"
    assert "hint" in body


async def test_each_token_has_its_own_budget(make_client: MakeClient, settings: Settings, tokens: Tokens) -> None:
    client = await limited(make_client, settings, 2, 60)
    first, second = auth(await tokens.create("admin")), auth(await tokens.create("viewer", ("settings:read",)))
    assert [(await client.get(SPACES, headers=first)).status for _ in range(3)] == [200, 200, 429]
    assert (await client.get(SPACES, headers=second)).status == 200


async def test_the_budget_refills_over_time(make_client: MakeClient, settings: Settings, admin: dict) -> None:
    client = await limited(make_client, settings, 2, 4)  # one request back every two seconds
    assert [(await client.get(SPACES, headers=admin)).status for _ in range(3)] == [200, 200, 429]
    await asyncio.sleep(2.1)
    assert (await client.get(SPACES, headers=admin)).status == 200


async def test_health_probes_and_docs_are_never_limited(make_client: MakeClient, settings: Settings) -> None:
    client = await limited(make_client, settings, 1, 60)
    for _ in range(5):
        for path in ("/healthz", "/readyz", "/api/docs/openapi.json"):
            resp = await client.get(path)
            assert resp.status == 200, path
            assert "RateLimit" not in resp.headers


async def test_requests_without_a_token_count_against_the_client_address(
    make_client: MakeClient, settings: Settings
) -> None:
    client = await limited(make_client, settings, 2, 60)
    statuses = [(await client.get("/api/unknown")).status for _ in range(3)]
    assert statuses == [404, 404, 429]


async def test_failed_authentication_has_its_own_tighter_budget(
    make_client: MakeClient, settings: Settings, admin: dict
) -> None:
    client = await make_client(settings.with_changes(auth_failure_limit=RateBudget(3, 60)))
    wrong = auth("sps_" + "x" * 43)
    assert [(await client.get(SPACES, headers=wrong)).status for _ in range(3)] == [401, 401, 401]
    for _ in range(3):
        resp = await client.get(SPACES, headers=wrong)
        body = await assert_envelope(resp, 429, "RATE_LIMITED")
        assert "failed authentication" in body["message"] and int(resp.headers["Retry-After"]) >= 1
    await assert_envelope(await client.get(SPACES), 429, "RATE_LIMITED")  # no token at all fails too


async def test_a_valid_token_is_served_from_an_address_that_spent_its_failure_budget(
    make_client: MakeClient, settings: Settings, admin: dict, viewer: dict
) -> None:
    """Everyone behind one proxy shares its address: one client guessing tokens must not lock
    the others out."""
    client = await make_client(settings.with_changes(auth_failure_limit=RateBudget(3, 60)))
    wrong = auth("sps_" + "x" * 43)
    statuses = [(await client.get(SPACES, headers=wrong)).status for _ in range(5)]
    assert statuses == [401, 401, 401, 429, 429]
    assert (await client.get(SPACES, headers=admin)).status == 200
    assert (await client.put(SPACES, json=BODY, headers=admin)).status == 201
    assert (await client.get(SPACES, headers=viewer)).status == 200
    assert (await client.get(SPACES, headers=wrong)).status == 429


async def test_off_disables_rate_limits(make_client: MakeClient, settings: Settings, admin: dict) -> None:
    client = await make_client(settings.with_changes(rate_limit=None))
    for _ in range(30):
        resp = await client.get(SPACES, headers=admin)
        assert resp.status == 200 and "RateLimit" not in resp.headers


@pytest.mark.unit
def test_the_rate_limit_variable_is_parsed_and_validated() -> None:
    assert Settings.from_env({"SPACESVC_RATE_LIMIT": "100/10"}).rate_limit == RateBudget(100, 10)
    assert Settings.from_env({"SPACESVC_RATE_LIMIT": "off"}).rate_limit is None
    assert Settings.from_env({}).rate_limit == RateBudget(600, 60)
    for bad in ("100", "0/10", "ten/10", "100/0"):
        with pytest.raises(ConfigError, match="SPACESVC_RATE_LIMIT"):
            Settings.from_env({"SPACESVC_RATE_LIMIT": bad})
