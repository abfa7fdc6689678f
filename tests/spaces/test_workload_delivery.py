"""Delivery where workloads look (docs/workloads.md): watches on the credentials routes, the token's
own environment at GET /api/spaces/credentials, and ?format=credential-process."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from aiohttp.test_utils import TestClient

from spacesvc.settings import Settings
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
from tests.support.secrecy import SECRET

OWN_CREDENTIALS = "/api/spaces/credentials"


async def prod_workload(client: TestClient, admin: dict, tokens: Tokens) -> tuple[str, dict[str, str]]:
    """Spaces configured and enabled for prod (version 2), and a token bound to prod."""
    assert (await client.put(SPACES, json=BODY, headers=admin)).status == 201
    prod = await create_environment(client, admin, "prod")
    await enable(client, admin, prod)
    return prod, auth(await tokens.create("viewer", ("spaces:credentials",), environment="prod"))


async def test_a_watch_on_the_credentials_is_answered_when_the_key_changes(
    client: TestClient, admin: dict, tokens: Tokens
) -> None:
    prod, workload = await prod_workload(client, admin, tokens)
    for path in (credentials_path(prod), OWN_CREDENTIALS):
        started = time.monotonic()
        version = (await (await client.get(path, headers=workload)).json())["version"]
        watch = asyncio.create_task(
            client.get(path, headers={**workload, "If-None-Match": f'"{version}"', "Prefer": "wait=20"})
        )
        await asyncio.sleep(0.5)
        assert not watch.done()  # held
        new_key = f"DO00KEY{version}"
        await client.patch(SPACES, json={"accessKey": new_key, "secretKey": f"{SECRET}-{version}"}, headers=admin)
        resp = await watch
        assert resp.status == 200 and time.monotonic() - started < 10
        assert resp.headers["Preference-Applied"] == "wait=20" and resp.headers["ETag"] == f'"{version + 1}"'
        body = await resp.json()
        assert (body["accessKey"], body["secretKey"] == f"{SECRET}-{version}") == (new_key, True)


async def test_a_watch_on_the_credentials_without_a_change_is_a_304_after_its_wait(
    client: TestClient, admin: dict, tokens: Tokens
) -> None:
    prod, workload = await prod_workload(client, admin, tokens)
    started = time.monotonic()
    resp = await client.get(credentials_path(prod), headers={**workload, "If-None-Match": '"2"', "Prefer": "wait=2"})
    assert resp.status == 304 and time.monotonic() - started >= 1.9
    assert resp.headers["Preference-Applied"] == "wait=2" and resp.headers["ETag"] == '"2"'


async def test_disabling_the_environment_answers_its_watch_with_404(
    client: TestClient, admin: dict, tokens: Tokens
) -> None:
    prod, workload = await prod_workload(client, admin, tokens)
    watch = asyncio.create_task(
        client.get(OWN_CREDENTIALS, headers={**workload, "If-None-Match": '"2"', "Prefer": "wait=20"})
    )
    await asyncio.sleep(0.5)
    await enable(client, admin, prod, False)
    body = await assert_envelope(await watch, 404, "NOT_FOUND")
    assert "not enabled" in body["message"]


async def test_the_own_route_delivers_the_environment_the_token_is_bound_to(
    client: TestClient, admin: dict, tokens: Tokens
) -> None:
    prod, workload = await prod_workload(client, admin, tokens)
    own = await client.get(OWN_CREDENTIALS, headers=workload)
    named = await client.get(credentials_path(prod), headers=workload)
    assert own.status == named.status == 200
    assert await own.json() == await named.json()
    assert own.headers["ETag"] == named.headers["ETag"] and own.headers["Cache-Control"] == "no-store"
    # a token bound to no environment has no credentials of its own, an admin's included
    body = await assert_envelope(await client.get(OWN_CREDENTIALS, headers=admin), 403, "FORBIDDEN_SCOPE")
    assert "spaces:credentials" in body["message"] and SECRET not in str(body)


async def test_credential_process_format_expires_after_the_ttl(
    make_client: MakeClient, settings: Settings, admin: dict, tokens: Tokens
) -> None:
    client = await make_client(settings.with_changes(credential_ttl_seconds=900.0))
    prod, workload = await prod_workload(client, admin, tokens)
    for path in (credentials_path(prod), OWN_CREDENTIALS):
        resp = await client.get(path, params={"format": "credential-process"}, headers=workload)
        assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store" and resp.headers["ETag"] == '"2"'
        body = await resp.json()
        assert sorted(body) == ["AccessKeyId", "Expiration", "SecretAccessKey", "Version"]
        assert (body["Version"], body["AccessKeyId"], body["SecretAccessKey"] == SECRET) == (1, BODY["accessKey"], True)
        assert body["Expiration"].endswith("Z")
        expires = datetime.fromisoformat(body["Expiration"])
        assert abs(expires - (datetime.now(UTC) + timedelta(seconds=900))) < timedelta(seconds=10)
    refused = await client.get(OWN_CREDENTIALS, params={"format": "yaml"}, headers=workload)
    assert (await assert_envelope(refused, 400, "VALIDATION_ERROR"))["field"] == "format"
