"""GET /metrics (docs/configuration.md): Prometheus text for anyone, never rate limited, labelled by route
template and never by a raw path, a token or a secret; the figures move with what happens."""

from __future__ import annotations

import asyncio
import uuid

from aiohttp.test_utils import TestClient

from spacesvc.settings import RateBudget, Settings
from tests.support.api import (
    BODY,
    SPACES,
    MakeClient,
    Tokens,
    assert_envelope,
    auth,
    create_environment,
    credentials_path,
    enable,
)
from tests.support.prometheus import sample
from tests.support.secrecy import SECRET, assert_hidden


async def scrape(client: TestClient) -> str:
    """The figures as of now: /metrics is rendered at most once a second."""
    await asyncio.sleep(1.05)
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.content_type == "text/plain"
    return await resp.text()


async def test_requests_are_counted_by_route_template_never_by_path_or_token(
    client: TestClient, admin: dict, tokens: Tokens
) -> None:
    before = await scrape(client)
    unknown = str(uuid.uuid4())
    await client.put(SPACES, json=BODY, headers=admin)
    await client.get(SPACES, headers=admin)
    await client.get(f"/api/environments/{unknown}/spaces/buckets", headers=admin)
    await client.get(f"/nothing/here/{unknown}")
    after = await scrape(client)

    def moved(**labels: str) -> float:
        name = "spacesvc_http_requests_total"
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved(method="PUT", route=SPACES, status="201") == 1
    assert moved(method="GET", route=SPACES, status="200") == 1
    assert moved(method="GET", route="/api/environments/{id}/spaces/buckets", status="404") == 1
    assert moved(method="GET", route="unmatched", status="404") == 1
    assert sample(after, "spacesvc_http_request_duration_seconds_count", method="GET", route=SPACES, status="200")
    assert unknown not in after
    assert_hidden(after, SECRET, admin["Authorization"].removeprefix("Bearer "), where="/metrics")


async def test_metrics_need_no_token_and_are_never_rate_limited(make_client: MakeClient, settings: Settings) -> None:
    client = await make_client(settings.with_changes(rate_limit=RateBudget(2, 60)))
    for _ in range(5):
        await scrape(client)
    assert (await client.get(SPACES)).status == 401  # the API still needs its token


async def test_metrics_off_removes_the_route(make_client: MakeClient, settings: Settings) -> None:
    client = await make_client(settings.with_changes(metrics=False))
    await assert_envelope(await client.get("/metrics"), 404, "NOT_FOUND")


async def test_the_figures_of_what_operators_watch_move(client: TestClient, admin: dict, tokens: Tokens) -> None:
    before = await scrape(client)
    await client.put(SPACES, json=BODY, headers={**admin, "Idempotency-Key": "k-1"})
    await client.put(SPACES, json=BODY, headers={**admin, "Idempotency-Key": "k-1"})  # a replay
    prod = await create_environment(client, admin, "prod")
    await enable(client, admin, prod)
    workload = auth(await tokens.create("viewer", ("spaces:credentials",), environment="prod"))
    assert (await client.get(credentials_path(prod), headers=workload)).status == 200
    etag = (await client.get(SPACES, headers=admin)).headers["ETag"]
    held = await client.get(SPACES, headers={**admin, "If-None-Match": etag, "Prefer": "wait=1"})
    assert held.status == 304
    after = await scrape(client)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("spacesvc_idempotent_replays_total") == 1
    assert moved("spacesvc_credential_deliveries_total") == 1
    assert moved("spacesvc_watches_answered_total", outcome="unchanged") == 1
    assert moved("spacesvc_secret_backend_calls_total", backend="db", operation="write", outcome="ok") == 1
    assert moved("spacesvc_secret_backend_calls_total", backend="db", operation="read", outcome="ok") >= 1
    assert moved("spacesvc_cache_reads_total", source="memory") >= 1
    assert sample(after, "spacesvc_cache_listening") == 1
    assert sample(after, "spacesvc_db_pool_connections") >= 1
    assert sample(after, "spacesvc_rate_limit_storage_up") == 1
