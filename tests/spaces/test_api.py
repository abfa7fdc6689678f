"""GET, PUT, PATCH and DELETE /api/settings/spaces: BRIDGEPORT's shapes and the extras of docs/api.md."""

from __future__ import annotations

import re

import asyncpg
from aiohttp.test_utils import TestClient

from tests.support.api import BODY, SPACES
from tests.support.secrecy import SECRET

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


async def test_get_before_configuration_says_not_configured(client: TestClient, viewer: dict) -> None:
    resp = await client.get(SPACES, headers=viewer)
    assert resp.status == 200
    assert await resp.json() == {"configured": False, "config": None}
    assert "ETag" not in resp.headers


async def test_first_put_creates_with_201_and_returns_the_config_without_secret(
    client: TestClient, admin: dict
) -> None:
    resp = await client.put(SPACES, json=BODY, headers=admin)
    assert resp.status == 201
    config = (await resp.json())["config"]
    assert config["accessKey"] == "DO00EXAMPLEKEY"
    assert config["region"] == "ams3"
    assert config["endpoint"] == "ams3.digitaloceanspaces.com"
    assert config["buckets"] == ["backups", "media.assets"]
    assert config["hasSecretKey"] is True
    assert config["secretBackend"] == "db"
    assert config["version"] == 1
    assert config["updatedBy"] == "admin-token"
    assert RFC3339_UTC.match(config["createdAt"]) and RFC3339_UTC.match(config["updatedAt"])
    assert "secretKey" not in config
    assert resp.headers["ETag"] == '"1"'


async def test_get_after_put_returns_configured_and_etag(client: TestClient, admin: dict, viewer: dict) -> None:
    created = (await (await client.put(SPACES, json=BODY, headers=admin)).json())["config"]
    resp = await client.get(SPACES, headers=viewer)
    assert resp.status == 200
    assert await resp.json() == {"configured": True, "config": created}
    assert resp.headers["ETag"] == '"1"'


async def test_put_defaults_region_endpoint_and_buckets(client: TestClient, admin: dict) -> None:
    resp = await client.put(SPACES, json={"accessKey": "AK", "secretKey": SECRET}, headers=admin)
    config = (await resp.json())["config"]
    assert (config["region"], config["endpoint"], config["buckets"]) == ("fra1", "fra1.digitaloceanspaces.com", [])


async def test_put_is_a_full_replacement_and_keeps_the_id(client: TestClient, admin: dict) -> None:
    first = (await (await client.put(SPACES, json=BODY, headers=admin)).json())["config"]
    resp = await client.put(SPACES, json={"accessKey": "OTHER"}, headers=admin)
    assert resp.status == 200
    config = (await resp.json())["config"]
    assert config["id"] == first["id"]
    assert config["accessKey"] == "OTHER"
    assert config["region"] == "fra1" and config["buckets"] == []
    assert config["version"] == 2
    assert config["createdAt"] == first["createdAt"]
    assert config["hasSecretKey"] is True


async def test_put_without_secret_on_create_is_a_validation_error(
    client: TestClient, admin: dict, conn: asyncpg.Connection
) -> None:
    resp = await client.put(SPACES, json={"accessKey": "AK"}, headers=admin)
    assert resp.status == 400
    body = await resp.json()
    assert body["code"] == "VALIDATION_ERROR" and body["field"] == "secretKey"
    assert await conn.fetchval("SELECT count(*) FROM spaces_config") == 0


async def test_empty_secret_on_replace_keeps_the_stored_secret(
    client: TestClient, admin: dict, conn: asyncpg.Connection
) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    before = await conn.fetchrow("SELECT nonce, ciphertext FROM secret_ciphertexts")
    resp = await client.put(SPACES, json={**BODY, "secretKey": ""}, headers=admin)
    assert resp.status == 200
    assert (await resp.json())["config"]["hasSecretKey"] is True
    assert await conn.fetchrow("SELECT nonce, ciphertext FROM secret_ciphertexts") == before


async def test_put_that_changes_nothing_answers_200_without_bumping_version(client: TestClient, admin: dict) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    resp = await client.put(SPACES, json=BODY, headers=admin)
    assert resp.status == 200
    config = (await resp.json())["config"]
    assert config["version"] == 1
    assert resp.headers["ETag"] == '"1"'


async def test_put_with_a_new_secret_bumps_version_and_reencrypts(
    client: TestClient, admin: dict, conn: asyncpg.Connection
) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    before = await conn.fetchval("SELECT ciphertext FROM secret_ciphertexts")
    resp = await client.put(SPACES, json={**BODY, "secretKey": SECRET + "-rotated"}, headers=admin)
    assert (await resp.json())["config"]["version"] == 2
    assert await conn.fetchval("SELECT ciphertext FROM secret_ciphertexts") != before


async def test_patch_merges_fields_and_bumps_version(client: TestClient, admin: dict) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    resp = await client.patch(SPACES, json={"buckets": ["archive"]}, headers=admin)
    assert resp.status == 200
    config = (await resp.json())["config"]
    assert config["buckets"] == ["archive"]
    assert config["accessKey"] == "DO00EXAMPLEKEY" and config["region"] == "ams3"
    assert config["version"] == 2
    assert resp.headers["ETag"] == '"2"'


async def test_patch_region_moves_a_derived_endpoint_but_not_an_explicit_one(client: TestClient, admin: dict) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    derived = (await (await client.patch(SPACES, json={"region": "nyc3"}, headers=admin)).json())["config"]
    assert derived["endpoint"] == "nyc3.digitaloceanspaces.com"
    await client.patch(SPACES, json={"endpoint": "https://minio.internal:9000"}, headers=admin)
    explicit = (await (await client.patch(SPACES, json={"region": "sgp1"}, headers=admin)).json())["config"]
    assert explicit["endpoint"] == "https://minio.internal:9000"


async def test_patch_null_resets_optional_fields_to_defaults(client: TestClient, admin: dict) -> None:
    await client.put(SPACES, json={**BODY, "endpoint": "minio.local:9000"}, headers=admin)
    resp = await client.patch(SPACES, json={"region": None, "endpoint": None, "buckets": None}, headers=admin)
    config = (await resp.json())["config"]
    assert (config["region"], config["endpoint"], config["buckets"]) == ("fra1", "fra1.digitaloceanspaces.com", [])


async def test_patch_null_access_key_or_secret_is_rejected(client: TestClient, admin: dict) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    for field in ("accessKey", "secretKey"):
        resp = await client.patch(SPACES, json={field: None}, headers=admin)
        body = await resp.json()
        assert resp.status == 400 and body["field"] == field


async def test_patch_that_changes_nothing_does_not_bump_version(client: TestClient, admin: dict) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    resp = await client.patch(SPACES, json={"region": "ams3", "secretKey": SECRET}, headers=admin)
    assert resp.status == 200
    assert (await resp.json())["config"]["version"] == 1


async def test_patch_when_not_configured_is_404(client: TestClient, admin: dict) -> None:
    resp = await client.patch(SPACES, json={"region": "nyc3"}, headers=admin)
    assert resp.status == 404
    assert (await resp.json())["code"] == "NOT_FOUND"


async def test_delete_removes_the_row_and_the_secret(client: TestClient, admin: dict, conn: asyncpg.Connection) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    resp = await client.delete(SPACES, headers=admin)
    assert resp.status == 200
    assert await resp.json() == {"success": True}
    assert await conn.fetchval("SELECT count(*) FROM spaces_config") == 0
    assert await conn.fetchval("SELECT count(*) FROM secret_ciphertexts") == 0
    assert await (await client.get(SPACES, headers=admin)).json() == {"configured": False, "config": None}


async def test_delete_when_not_configured_is_404(client: TestClient, admin: dict) -> None:
    resp = await client.delete(SPACES, headers=admin)
    assert resp.status == 404
    assert (await resp.json())["code"] == "NOT_FOUND"


async def test_create_after_delete_starts_at_version_1_with_a_new_id(client: TestClient, admin: dict) -> None:
    first = (await (await client.put(SPACES, json=BODY, headers=admin)).json())["config"]
    await client.delete(SPACES, headers=admin)
    resp = await client.put(SPACES, json=BODY, headers=admin)
    assert resp.status == 201
    config = (await resp.json())["config"]
    assert config["version"] == 1 and config["id"] != first["id"]


async def test_if_match_with_a_stale_version_is_412_and_changes_nothing(client: TestClient, admin: dict) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    await client.patch(SPACES, json={"region": "nyc3"}, headers=admin)
    resp = await client.patch(SPACES, json={"region": "sfo3"}, headers={**admin, "If-Match": '"1"'})
    assert resp.status == 412
    body = await resp.json()
    assert body["code"] == "CONFLICT" and "hint" in body
    resp = await client.delete(SPACES, headers={**admin, "If-Match": '"1"'})
    assert resp.status == 412
    current = (await (await client.get(SPACES, headers=admin)).json())["config"]
    assert current["region"] == "nyc3" and current["version"] == 2


async def test_if_match_with_the_current_version_succeeds(client: TestClient, admin: dict) -> None:
    resp = await client.put(SPACES, json=BODY, headers=admin)
    resp = await client.patch(SPACES, json={"region": "sfo3"}, headers={**admin, "If-Match": resp.headers["ETag"]})
    assert resp.status == 200


async def test_if_none_match_star_creates_only(client: TestClient, admin: dict) -> None:
    resp = await client.put(SPACES, json=BODY, headers={**admin, "If-None-Match": "*"})
    assert resp.status == 201
    resp = await client.put(SPACES, json={**BODY, "accessKey": "X"}, headers={**admin, "If-None-Match": "*"})
    assert resp.status == 412
    assert (await resp.json())["code"] == "CONFLICT"


async def test_malformed_if_match_is_a_validation_error_naming_the_header(client: TestClient, admin: dict) -> None:
    resp = await client.put(SPACES, json=BODY, headers={**admin, "If-Match": "version-1"})
    assert resp.status == 400
    assert (await resp.json())["field"] == "If-Match"
