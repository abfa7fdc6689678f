"""A key of its own for every environment (docs/keys.md), proven with real authorization: the
issuer is DigitalOcean's Spaces Keys API as the local stand-in (whose keys are IAM users on moto)
or moto's IAM itself, and what a delivered key can do is asked of moto's S3 with IAM enforced."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from backends.env import EnvSettings
from spacesvc.keys.runtime import KEYS
from spacesvc.settings import Settings
from tests.support.api import (
    SPACES,
    SPACES_ENVIRONMENTS,
    MakeClient,
    Tokens,
    assert_envelope,
    auth,
    create_environment,
    credentials_path,
)
from tests.support.s3 import AccessKey, MotoS3
from tests.support.secrecy import assert_hidden
from tests.support.spaces_keys import SpacesKeysApi

ISSUER = "/api/settings/spaces/issuer"
OWN, OTHER = "existing-one", "existing-two"
TOKEN = "dop_v1_" + secrets.token_hex(24)


def rotate_path(environment_id: str) -> str:
    return f"/api/environments/{environment_id}/spaces/credentials/rotate"


@dataclass
class World:
    """The service with an issuer of one type, its Spaces configuration on moto's S3."""

    client: TestClient
    admin: dict[str, str]
    tokens: Tokens
    s3: MotoS3
    kind: str
    prefix: str
    api: SpacesKeysApi

    async def issuer_keys(self) -> list[str]:
        """The access keys the issuer holds under this test's prefix."""
        keys = self.client.app[KEYS].keys
        async with keys.acquire() as conn:
            issuer = await keys.issuer(conn, deleted_too=True)
        assert issuer is not None
        return sorted(info.access_key for info in await issuer.list_keys(self.prefix))

    async def environment(self, name: str, **grants: object) -> tuple[str, dict[str, str]]:
        """An environment enabled with ``grants``, and a workload token bound to it."""
        environment_id = await create_environment(self.client, self.admin, name)
        resp = await self.client.put(
            f"{SPACES_ENVIRONMENTS}/{environment_id}", json={"enabled": True, **grants}, headers=self.admin
        )
        assert resp.status == 200, await resp.text()
        token = await self.tokens.create("viewer", ("spaces:credentials",), name=f"{name}-workload", environment=name)
        return environment_id, auth(token)

    async def credentials(self, environment_id: str, workload: dict[str, str]) -> dict:
        resp = await self.client.get(credentials_path(environment_id), headers=workload)
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())

    async def can(self, credentials: dict, action: str, bucket: str) -> bool:
        return await self.s3.allows(AccessKey(credentials["accessKey"], credentials["secretKey"]), action, bucket)


async def eventually(check: Callable[[], Awaitable[bool]], limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not await check():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.2)


def issuer_body(kind: str, s3: MotoS3) -> dict[str, str]:
    if kind == "digitalocean":
        return {"type": "digitalocean", "apiToken": TOKEN}
    manager = s3.key_manager
    return {"type": "aws-iam", "accessKey": manager.access_key, "secretKey": manager.secret_key, "region": "us-east-1"}


async def configure(client: TestClient, admin: dict[str, str], s3: MotoS3) -> None:
    full = s3.keys["full"]
    body = {"accessKey": full.access_key, "secretKey": full.secret_key, "endpoint": s3.url, "buckets": [OWN, OTHER]}
    resp = await client.put(SPACES, json=body, headers=admin)
    assert resp.status == 201, await resp.text()
    admin_s3 = s3.client("s3", full)
    for bucket in (OWN, OTHER):
        await asyncio.to_thread(admin_s3.put_object, Bucket=bucket, Key="readable", Body=b"data")


@pytest.fixture
async def spaces_api(s3: MotoS3) -> AsyncIterator[SpacesKeysApi]:
    async with SpacesKeysApi(s3, TOKEN) as api:
        yield api


def keys_settings(settings: Settings, s3: MotoS3, api: SpacesKeysApi, prefix: str, **more: object) -> Settings:
    return settings.with_changes(
        **{"digitalocean_api_url": api.url, "iam_endpoint": s3.url, "key_prefix": prefix, "key_overlap_seconds": 3600.0}
        | more
    )


@pytest.fixture(params=["digitalocean", "aws-iam"])
async def world(
    request: pytest.FixtureRequest,
    make_client: MakeClient,
    settings: Settings,
    s3: MotoS3,
    spaces_api: SpacesKeysApi,
    admin: dict[str, str],
    tokens: Tokens,
) -> World:
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    client = await make_client(keys_settings(settings, s3, spaces_api, prefix))
    await configure(client, admin, s3)
    resp = await client.put(ISSUER, json=issuer_body(request.param, s3), headers=admin)
    assert resp.status == 201, await resp.text()
    return World(client, admin, tokens, s3, request.param, prefix, spaces_api)


# -- the issuer resource ---------------------------------------------------------------------------


async def test_the_issuer_is_shown_without_its_secret_with_an_etag_and_writes_follow_if_match(
    make_client: MakeClient, settings: Settings, s3: MotoS3, spaces_api: SpacesKeysApi, admin: dict, viewer: dict
) -> None:
    client = await make_client(keys_settings(settings, s3, spaces_api, "spacesvc-"))
    empty = await client.get(ISSUER, headers=admin)
    assert empty.status == 200 and await empty.json() == {"configured": False, "issuer": None}
    created = await client.put(ISSUER, json={"type": "digitalocean", "apiToken": TOKEN}, headers=admin)
    assert created.status == 201 and created.headers["ETag"] == '"1"'
    shown = await client.get(ISSUER, headers=admin)
    body = await shown.json()
    assert body["configured"] is True and shown.headers["ETag"] == '"1"'
    assert {k: body["issuer"][k] for k in ("type", "hasSecret", "version", "updatedBy")} == {
        "type": "digitalocean",
        "hasSecret": True,
        "version": 1,
        "updatedBy": "admin-token",
    }
    assert_hidden(TOKEN, await shown.text(), await created.text())
    # the secret omitted keeps the stored one; the same body changes nothing
    same = await client.put(ISSUER, json={"type": "digitalocean"}, headers={**admin, "If-Match": '"1"'})
    assert same.status == 200 and (await same.json())["issuer"]["version"] == 1
    stale = await client.put(
        ISSUER, json={"type": "digitalocean", "apiToken": "x"}, headers={**admin, "If-Match": '"7"'}
    )
    await assert_envelope(stale, 412, "CONFLICT")
    await assert_envelope(
        await client.put(ISSUER, json={"type": "digitalocean"}, headers=viewer), 403, "FORBIDDEN_ROLE"
    )
    await assert_envelope(
        await client.put(ISSUER, json={"type": "digitalocean", "version": 3}, headers=admin), 422, "READONLY_FIELD"
    )
    test = await client.post(f"{ISSUER}/test", headers=admin)
    assert test.status == 200 and (await test.json())["success"] is True
    assert [method for method, _ in spaces_api.requests].count("POST") == 1 and spaces_api.keys == {}
    deleted = await client.delete(ISSUER, headers=admin)
    assert deleted.status == 200
    assert await (await client.get(ISSUER, headers=admin)).json() == {"configured": False, "issuer": None}
    await assert_envelope(await client.delete(ISSUER, headers=admin), 404, "NOT_FOUND")


async def test_a_first_issuer_without_its_secret_is_a_validation_error(client: TestClient, admin: dict) -> None:
    resp = await client.put(ISSUER, json={"type": "aws-iam", "accessKey": "AKIAEXAMPLE"}, headers=admin)
    body = await assert_envelope(resp, 400, "VALIDATION_ERROR")
    assert body["field"] == "secretKey"


async def test_an_issuer_under_the_env_backend_is_refused_with_a_hint(
    make_client: MakeClient, settings: Settings, admin: dict
) -> None:
    client = await make_client(settings.with_changes(secrets=EnvSettings("env-secret")))
    resp = await client.put(ISSUER, json={"type": "digitalocean", "apiToken": TOKEN}, headers=admin)
    body = await assert_envelope(resp, 422, "READONLY_FIELD")
    assert body["field"] == "apiToken" and "SPACESVC_SECRET_BACKEND" in body["hint"]


# -- minting, grants and delivery ------------------------------------------------------------------


async def test_each_environment_gets_a_key_of_its_own_allowed_its_buckets_only(world: World) -> None:
    web_id, web = await world.environment("web", buckets=[OWN])
    reports_id, reports = await world.environment("reports", buckets=[OTHER], permission="read")
    web_key, reports_key = await world.credentials(web_id, web), await world.credentials(reports_id, reports)
    assert web_key["accessKey"] != reports_key["accessKey"]
    assert (web_key["buckets"], web_key["permission"]) == ([OWN], "readwrite")
    assert (reports_key["buckets"], reports_key["permission"]) == ([OTHER], "read")
    assert await world.can(web_key, "read", OWN) and await world.can(web_key, "write", OWN)
    assert not await world.can(web_key, "read", OTHER) and not await world.can(web_key, "write", OTHER)
    assert await world.can(reports_key, "read", OTHER)
    assert not await world.can(reports_key, "write", OTHER) and not await world.can(reports_key, "read", OWN)
    assert sorted([web_key["accessKey"], reports_key["accessKey"]]) == await world.issuer_keys()
    listed = {
        e["name"]: e
        for e in (await (await world.client.get(SPACES_ENVIRONMENTS, headers=world.admin)).json())["environments"]
    }
    assert listed["web"]["key"]["accessKey"] == web_key["accessKey"] and listed["web"]["buckets"] == [OWN]
    assert listed["reports"]["permission"] == "read"
    assert_hidden(web_key["secretKey"], str(listed))


async def test_buckets_outside_the_configuration_are_a_validation_error(world: World) -> None:
    environment_id = await create_environment(world.client, world.admin, "web")
    resp = await world.client.put(
        f"{SPACES_ENVIRONMENTS}/{environment_id}", json={"enabled": True, "buckets": ["elsewhere"]}, headers=world.admin
    )
    assert (await assert_envelope(resp, 400, "VALIDATION_ERROR"))["field"] == "buckets"
    assert await world.issuer_keys() == []


async def test_an_issuer_that_cannot_mint_is_503_issuer_and_nothing_changes(
    make_client: MakeClient, settings: Settings, s3: MotoS3, spaces_api: SpacesKeysApi, admin: dict
) -> None:
    client = await make_client(keys_settings(settings, s3, spaces_api, f"t{uuid.uuid4().hex[:8]}-"))
    await configure(client, admin, s3)
    assert (
        await client.put(ISSUER, json={"type": "digitalocean", "apiToken": "dop_v1_wrong"}, headers=admin)
    ).status == 201
    environment_id = await create_environment(client, admin, "web")
    resp = await client.put(f"{SPACES_ENVIRONMENTS}/{environment_id}", json={"enabled": True}, headers=admin)
    body = await assert_envelope(resp, 503, "SERVICE_UNAVAILABLE")
    assert body["dependency"] == "issuer"
    listed = (await (await client.get(SPACES_ENVIRONMENTS, headers=admin)).json())["environments"]
    assert listed[0]["spacesEnabled"] is False and listed[0]["key"] is None
    assert (await (await client.get(SPACES, headers=admin)).json())["config"]["version"] == 1


async def test_a_throttled_issuer_is_retried_as_it_asks_and_the_key_minted(world: World) -> None:
    if world.kind != "digitalocean":
        pytest.skip("the stand-in throttles; moto's IAM does not")

    async def reconciled() -> bool:  # the issuer's first reconciliation, which setting it starts
        return any(method == "GET" for method, _ in world.api.requests)

    await eventually(reconciled)
    world.api.throttle(1, retry_after="1")
    environment_id, workload = await world.environment("web")
    assert (await world.credentials(environment_id, workload))["buckets"] == [OWN, OTHER]


async def test_a_new_key_is_a_new_version_that_a_watch_sees(world: World) -> None:
    environment_id, workload = await world.environment("web")
    first = await world.credentials(environment_id, workload)
    etag = f'"{first["version"]}"'
    watch = asyncio.ensure_future(
        world.client.get(
            credentials_path(environment_id), headers={**workload, "If-None-Match": etag, "Prefer": "wait=20"}
        )
    )
    await asyncio.sleep(0.5)
    rotated = await world.client.post(rotate_path(environment_id), headers=world.admin)
    assert rotated.status == 200, await rotated.text()
    answered = await watch
    assert answered.status == 200
    second = await answered.json()
    assert second["accessKey"] != first["accessKey"] and second["version"] > first["version"]
    unchanged = await world.client.get(
        credentials_path(environment_id), headers={**workload, "If-None-Match": f'"{second["version"]}"'}
    )
    assert unchanged.status == 304


# -- rotation, deletion --------------------------------------------------------------------------


async def test_after_rotation_the_old_key_works_until_the_workload_fetched_the_new_one(world: World) -> None:
    environment_id, workload = await world.environment("web", buckets=[OWN])
    old = await world.credentials(environment_id, workload)
    assert (await world.client.post(rotate_path(environment_id), headers=world.admin)).status == 200
    assert await world.can(old, "write", OWN)  # the overlap: nobody fetched the new key yet
    new = await world.credentials(environment_id, workload)
    assert new["accessKey"] != old["accessKey"] and await world.can(new, "write", OWN)

    async def old_denied() -> bool:
        return not await world.can(old, "read", OWN)

    await eventually(old_denied)
    assert await world.issuer_keys() == [new["accessKey"]]


async def test_a_change_of_grants_is_a_rotation_to_a_key_with_the_new_grants(world: World) -> None:
    environment_id, workload = await world.environment("web", buckets=[OWN])
    old = await world.credentials(environment_id, workload)
    resp = await world.client.put(
        f"{SPACES_ENVIRONMENTS}/{environment_id}",
        json={"enabled": True, "buckets": [OTHER], "permission": "read"},
        headers=world.admin,
    )
    assert resp.status == 200
    new = await world.credentials(environment_id, workload)
    assert new["accessKey"] != old["accessKey"] and (new["buckets"], new["permission"]) == ([OTHER], "read")
    assert await world.can(new, "read", OTHER) and not await world.can(new, "write", OTHER)


async def test_disabling_an_environment_deletes_its_key_at_the_issuer(world: World) -> None:
    environment_id, workload = await world.environment("web")
    key = await world.credentials(environment_id, workload)
    resp = await world.client.put(
        f"{SPACES_ENVIRONMENTS}/{environment_id}", json={"enabled": False}, headers=world.admin
    )
    assert resp.status == 200
    assert not await world.can(key, "read", OWN)
    assert await world.issuer_keys() == []
    await assert_envelope(await world.client.get(credentials_path(environment_id), headers=workload), 404, "NOT_FOUND")


async def test_deleting_the_issuer_deletes_every_key_it_minted(world: World, conn: asyncpg.Connection) -> None:
    first_id, first = await world.environment("web")
    second_id, second = await world.environment("jobs")
    keys = [await world.credentials(first_id, first), await world.credentials(second_id, second)]
    assert (await world.client.delete(ISSUER, headers=world.admin)).status == 200
    for key in keys:
        assert not await world.can(key, "read", OWN)
    assert await conn.fetchval("SELECT count(*) FROM environment_keys") == 0
    # without an issuer, the environments are delivered the configuration's key, as before
    assert (await world.credentials(first_id, first))["accessKey"] == world.s3.keys["full"].access_key


# -- reconciliation ------------------------------------------------------------------------------


async def test_reconciliation_deletes_unknown_prefixed_keys_and_mints_missing_ones_never_touching_others(
    world: World, conn: asyncpg.Connection
) -> None:
    keys = world.client.app[KEYS].keys
    async with keys.acquire() as db:
        issuer = await keys.issuer(db)
    assert issuer is not None
    await issuer.create_key(f"{world.prefix}stray-1", [])
    foreign_prefix = f"manual{uuid.uuid4().hex[:6]}-"
    foreign = await issuer.create_key(f"{foreign_prefix}kept-1", [])
    environment_id, workload = await world.environment("web")
    orphan = await world.credentials(environment_id, workload)
    # the environment's key vanishes from spacesvc's records (as after a restore of an old backup)
    await conn.execute("DELETE FROM environment_keys")
    await keys.reconcile()  # the background task may have reconciled too: the outcome is the same
    delivered = await world.credentials(environment_id, workload)
    assert delivered["accessKey"] != orphan["accessKey"]
    assert await world.issuer_keys() == [delivered["accessKey"]]  # neither the stray nor the orphan
    assert not await world.can(orphan, "read", OWN)
    assert [info.access_key for info in await issuer.list_keys(foreign_prefix)] == [foreign.access_key]
    await issuer.delete_key(foreign.access_key)


async def test_an_environment_never_has_more_than_two_keys(world: World, conn: asyncpg.Connection) -> None:
    environment_id, _ = await world.environment("web")
    for _ in range(3):
        assert (await world.client.post(rotate_path(environment_id), headers=world.admin)).status == 200
        states = await conn.fetch("SELECT state FROM environment_keys WHERE state <> 'deleting'")
        assert sorted(row["state"] for row in states) == ["active", "retiring"]

    async def two_left() -> bool:
        return len(await world.issuer_keys()) == 2

    await eventually(two_left)


async def test_keys_are_created_rotated_retired_and_deleted_in_the_audit_trail_without_a_secret(
    world: World, conn: asyncpg.Connection
) -> None:
    environment_id, workload = await world.environment("web")
    first = await world.credentials(environment_id, workload)
    await world.client.post(rotate_path(environment_id), headers=world.admin)
    second = await world.credentials(environment_id, workload)

    async def deleted() -> bool:
        return bool(
            await conn.fetchval("SELECT count(*) FROM audit_log WHERE resource_type = 'key' AND action = 'deleted'")
        )

    await eventually(deleted)
    rows = await conn.fetch(
        "SELECT action, details::text AS details FROM audit_log WHERE resource_type = 'key' ORDER BY id"
    )
    assert [row["action"] for row in rows] == ["created", "created", "rotated", "retired", "deleted"]
    assert first["accessKey"] in rows[0]["details"] and second["accessKey"] in rows[1]["details"]
    assert_hidden(first["secretKey"], str([dict(row) for row in rows]))
    assert_hidden(second["secretKey"], str([dict(row) for row in rows]))


async def test_deleting_the_environment_or_the_configuration_deletes_the_keys(world: World) -> None:
    first_id, first = await world.environment("web")
    second_id, second = await world.environment("jobs")
    first_key, second_key = await world.credentials(first_id, first), await world.credentials(second_id, second)
    assert (await world.client.delete(f"/api/environments/{first_id}", headers=world.admin)).status == 200

    async def denied(key: dict) -> bool:
        return not await world.can(key, "read", OWN)

    await eventually(lambda: denied(first_key))
    assert await world.can(second_key, "read", OWN)
    assert (await world.client.delete(SPACES, headers=world.admin)).status == 200
    await eventually(lambda: denied(second_key))
    assert await world.issuer_keys() == []


@pytest.mark.parametrize("kind", ["digitalocean"])
async def test_without_a_fetch_the_old_key_is_deleted_once_the_overlap_passed(
    kind: str,
    make_client: MakeClient,
    settings: Settings,
    s3: MotoS3,
    spaces_api: SpacesKeysApi,
    admin: dict,
    tokens: Tokens,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    client = await make_client(keys_settings(settings, s3, spaces_api, prefix, key_overlap_seconds=3.0))
    await configure(client, admin, s3)
    assert (await client.put(ISSUER, json=issuer_body(kind, s3), headers=admin)).status == 201
    world = World(client, admin, tokens, s3, kind, prefix, spaces_api)
    environment_id, workload = await world.environment("web")
    old = await world.credentials(environment_id, workload)
    assert (await client.post(rotate_path(environment_id), headers=admin)).status == 200
    assert await world.can(old, "read", OWN)  # within the overlap, nobody fetched the new key

    async def old_denied() -> bool:
        return not await world.can(old, "read", OWN)

    await eventually(old_denied)


async def test_a_key_older_than_the_maximum_age_is_rotated(
    make_client: MakeClient,
    settings: Settings,
    s3: MotoS3,
    spaces_api: SpacesKeysApi,
    admin: dict,
    tokens: Tokens,
    conn: asyncpg.Connection,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    client = await make_client(
        keys_settings(settings, s3, spaces_api, prefix).with_changes(key_max_age_seconds=86400.0)
    )
    await configure(client, admin, s3)
    assert (await client.put(ISSUER, json=issuer_body("digitalocean", s3), headers=admin)).status == 201
    world = World(client, admin, tokens, s3, "digitalocean", prefix, spaces_api)
    environment_id, workload = await world.environment("web")
    old = await world.credentials(environment_id, workload)
    assert old["rotatesAt"] is not None
    await conn.execute("UPDATE environment_keys SET created_at = now() - interval '2 days'")  # a day has passed

    async def rotated() -> bool:
        return (await world.credentials(environment_id, workload))["accessKey"] != old["accessKey"]

    await eventually(rotated)


async def test_with_the_vault_backend_the_issuer_and_the_keys_secrets_are_kept_in_vault(
    make_client: MakeClient,
    vault_settings: Settings,
    s3: MotoS3,
    spaces_api: SpacesKeysApi,
    admin: dict,
    tokens: Tokens,
    conn: asyncpg.Connection,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    client = await make_client(keys_settings(vault_settings, s3, spaces_api, prefix))
    await configure(client, admin, s3)
    assert (await client.put(ISSUER, json=issuer_body("digitalocean", s3), headers=admin)).status == 201
    world = World(client, admin, tokens, s3, "digitalocean", prefix, spaces_api)
    environment_id, workload = await world.environment("web", buckets=[OWN])
    key = await world.credentials(environment_id, workload)
    assert await world.can(key, "write", OWN) and not await world.can(key, "read", OTHER)
    # the configuration's own secret is untouched beside them
    config = await (await client.get(SPACES, headers=admin)).json()
    assert config["config"]["hasSecretKey"] is True
    assert await conn.fetchval("SELECT count(*) FROM secret_ciphertexts") == 0


async def test_when_the_configurations_buckets_change_a_key_granted_all_of_them_is_rotated_to_follow(
    world: World,
) -> None:
    environment_id, workload = await world.environment("web")
    old = await world.credentials(environment_id, workload)
    assert old["buckets"] == [OWN, OTHER]
    resp = await world.client.patch(SPACES, json={"buckets": [OWN]}, headers=world.admin)
    assert resp.status == 200

    async def followed() -> bool:
        return (await world.credentials(environment_id, workload))["buckets"] == [OWN]

    await eventually(followed)
    new = await world.credentials(environment_id, workload)
    assert new["accessKey"] != old["accessKey"] and not await world.can(new, "read", OTHER)
