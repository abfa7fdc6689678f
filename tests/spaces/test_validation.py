"""Every validation rule of docs/api.md, answered as VALIDATION_ERROR / READONLY_FIELD without storing anything."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from tests.support.api import BODY, SPACES
from tests.support.secrecy import SECRET, assert_hidden

INVALID = [
    ({"accessKey": ""}, "accessKey"),
    ({"accessKey": "has space"}, "accessKey"),
    ({"accessKey": "x" * 129}, "accessKey"),
    ({"accessKey": "ünicode"}, "accessKey"),
    ({"accessKey": 12}, "accessKey"),
    ({"secretKey": "x" * 257}, "secretKey"),
    ({"secretKey": 5}, "secretKey"),
    ({"region": "fra_1"}, "region"),
    # what the S3 signer refuses: all digits, a trailing '-'
    ({"region": "123"}, "region"),
    ({"region": "0"}, "region"),
    ({"region": "ams3-"}, "region"),
    ({"region": "-fra"}, "region"),
    ({"region": "a" * 33}, "region"),
    ({"region": ""}, "region"),
    ({"endpoint": "ftp://files.example.com"}, "endpoint"),
    ({"endpoint": "https://user:pw@s3.example.com"}, "endpoint"),
    ({"endpoint": "https://s3.example.com/?x=1"}, "endpoint"),
    ({"endpoint": "https://s3.example.com/#frag"}, "endpoint"),
    ({"endpoint": "s3.example.com:99999"}, "endpoint"),
    ({"endpoint": "s3 example.com"}, "endpoint"),
    ({"endpoint": "s3.example.com/path"}, "endpoint"),
    ({"endpoint": "-bad-.example.com"}, "endpoint"),
    ({"endpoint": ""}, "endpoint"),
    ({"buckets": "backups"}, "buckets"),
    ({"buckets": ["ok-bucket", "ab"]}, "buckets.1"),
    ({"buckets": ["x" * 64]}, "buckets.0"),
    ({"buckets": ["Upper"]}, "buckets.0"),
    ({"buckets": ["-starts-with-dash"]}, "buckets.0"),
    ({"buckets": ["ends-with-dot."]}, "buckets.0"),
    ({"buckets": ["two..dots"]}, "buckets.0"),
    ({"buckets": ["192.168.1.10"]}, "buckets.0"),
    ({"buckets": ["xn--punycode"]}, "buckets.0"),
    ({"buckets": ["name-s3alias"]}, "buckets.0"),
    ({"buckets": ["under_score"]}, "buckets.0"),
    ({"buckets": ["same-name", "same-name"]}, "buckets.1"),
    ({"buckets": [f"bucket-{i:03d}" for i in range(101)]}, "buckets"),
    ({"buckets": ["fine", 7]}, "buckets.1"),
    ({"unknownField": 1}, "unknownField"),
]

VALID = [
    {"endpoint": "fra1.digitaloceanspaces.com"},
    {"endpoint": "minio.local:9000"},
    {"endpoint": "http://127.0.0.1:9000"},
    {"endpoint": "https://s3.eu-central-1.amazonaws.com"},
    {"endpoint": "https://[::1]:9000"},
    {"region": "us-east-1"},
    {"buckets": ["abc", "a.b-c", "x" * 63]},
    {"buckets": [f"bucket-{i:03d}" for i in range(100)]},
    {"accessKey": "x" * 128},
    {"secretKey": "y" * 256},
]


@pytest.mark.parametrize(("change", "field"), INVALID)
async def test_invalid_put_is_a_validation_error_naming_the_field(
    client: TestClient, admin: dict, conn: asyncpg.Connection, change: dict[str, Any], field: str
) -> None:
    resp = await client.put(SPACES, json={**BODY, **change}, headers=admin)
    assert resp.status == 400
    body = await resp.json()
    assert body["code"] == "VALIDATION_ERROR"
    assert body["field"] == field
    assert field in body["errors"]
    assert await conn.fetchval("SELECT count(*) FROM spaces_config") == 0


@pytest.mark.parametrize("change", VALID)
async def test_valid_put_is_accepted(client: TestClient, admin: dict, change: dict[str, Any]) -> None:
    resp = await client.put(SPACES, json={**BODY, **change}, headers=admin)
    assert resp.status == 201, await resp.text()


@pytest.mark.parametrize(
    "field", ["id", "hasSecretKey", "secretBackend", "version", "createdAt", "updatedAt", "updatedBy"]
)
async def test_read_only_field_is_422_readonly_field(client: TestClient, admin: dict, field: str) -> None:
    resp = await client.put(SPACES, json={**BODY, field: "x"}, headers=admin)
    assert resp.status == 422
    body = await resp.json()
    assert body["code"] == "READONLY_FIELD"
    assert body["field"] == field
    assert body["message"] == f'Field "{field}" is read-only and cannot be set via PUT.'
    resp = await client.patch(SPACES, json={field: 1}, headers=admin)
    assert resp.status == 422
    assert (await resp.json())["message"] == f'Field "{field}" is read-only and cannot be set via PATCH.'


async def test_every_failing_field_is_listed_and_field_is_the_first_in_body_order(
    client: TestClient, admin: dict
) -> None:
    body = {"region": "BAD_", "accessKey": "", "buckets": ["ok-name", "x", "Y"], "extra": True, "secretKey": SECRET}
    resp = await client.put(SPACES, json=body, headers=admin)
    error = await resp.json()
    assert error["field"] == "region"
    assert set(error["errors"]) == {"region", "accessKey", "buckets.1", "buckets.2", "extra"}


async def test_missing_access_key_is_required(client: TestClient, admin: dict) -> None:
    resp = await client.put(SPACES, json={"secretKey": SECRET}, headers=admin)
    body = await resp.json()
    assert resp.status == 400 and body["field"] == "accessKey"


async def test_invalid_patch_changes_nothing(client: TestClient, admin: dict) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    resp = await client.patch(SPACES, json={"region": "nyc3", "buckets": ["Bad!"]}, headers=admin)
    assert resp.status == 400
    config = (await (await client.get(SPACES, headers=admin)).json())["config"]
    assert config["region"] == "ams3" and config["version"] == 1


async def test_validation_errors_never_echo_the_secret(client: TestClient, admin: dict) -> None:
    long_secret = SECRET * 10
    for body in ({**BODY, "secretKey": long_secret}, {**BODY, "secretKey": long_secret, "region": "BAD"}):
        resp = await client.put(SPACES, json=body, headers=admin)
        assert resp.status == 400
        text = await resp.text()
        assert_hidden(text, SECRET, where="the error")


async def test_region_is_case_insensitive_and_stored_lowercase(client: TestClient, admin: dict) -> None:
    resp = await client.put(SPACES, json={"accessKey": "AK", "secretKey": SECRET, "region": "FRA1"}, headers=admin)
    config = (await resp.json())["config"]
    assert resp.status == 201
    assert (config["region"], config["endpoint"]) == ("fra1", "fra1.digitaloceanspaces.com")
    resp = await client.patch(SPACES, json={"region": "Ams3"}, headers=admin)
    assert (await resp.json())["config"]["region"] == "ams3"
