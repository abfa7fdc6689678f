"""The Spaces Keys API stand-in answers as DigitalOcean's API reference describes, so the
``digitalocean`` issuer's tests mean something: routes, bodies, pagination, errors, headers."""

from __future__ import annotations

import secrets

import aiohttp

from tests.support.s3 import MotoS3
from tests.support.spaces_keys import SpacesKeysApi

TOKEN = "dop_v1_" + secrets.token_hex(24)
RATE_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")


async def test_the_stand_in_speaks_the_documented_routes_bodies_pages_and_errors(s3: MotoS3) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with SpacesKeysApi(s3, TOKEN) as api, aiohttp.ClientSession() as http:
        keys = f"{api.url}/v2/spaces/keys"
        async with http.get(keys) as resp:
            assert resp.status == 401 and await resp.json() == {
                "id": "unauthorized",
                "message": "Unable to authenticate you.",
            }
            assert all(header in resp.headers for header in RATE_HEADERS)
        created = []
        for name in ("a-key", "b-key"):
            body = {"name": name, "grants": [{"bucket": "existing-one", "permission": "read"}]}
            async with http.post(keys, json=body, headers=bearer) as resp:
                assert resp.status == 201 and all(header in resp.headers for header in RATE_HEADERS)
                key = (await resp.json())["key"]
                assert set(key) == {"name", "access_key", "secret_key", "grants", "created_at"}
                assert key["grants"] == body["grants"] and key["created_at"].endswith("Z")
                created.append(key)
        async with http.get(f"{keys}/{created[0]['access_key']}", headers=bearer) as resp:
            shown = (await resp.json())["key"]
            assert resp.status == 200 and "secret_key" not in shown and shown["name"] == "a-key"
        async with http.get(keys, params={"per_page": "1"}, headers=bearer) as resp:
            page = await resp.json()
            assert page["meta"] == {"total": 2} and len(page["keys"]) == 1 and "secret_key" not in page["keys"][0]
            assert page["links"]["pages"]["next"] == f"{keys}?per_page=1&page=2"
        async with http.get(keys, params={"per_page": "1", "page": "2"}, headers=bearer) as resp:
            page = await resp.json()
            assert "next" not in page["links"]["pages"] and page["links"]["pages"]["prev"].endswith("page=1")
        async with http.get(keys, params={"name": "b-k"}, headers=bearer) as resp:
            assert [k["name"] for k in (await resp.json())["keys"]] == ["b-key"]
        mixed = {
            "name": "mixed",
            "grants": [{"bucket": "", "permission": "fullaccess"}, {"bucket": "x", "permission": "read"}],
        }
        async with http.post(keys, json=mixed, headers=bearer) as resp:
            assert resp.status == 400 and (await resp.json())["id"] == "bad_request"
        async with http.delete(f"{keys}/{created[0]['access_key']}", headers=bearer) as resp:
            assert resp.status == 204
        async with http.delete(f"{keys}/{created[0]['access_key']}", headers=bearer) as resp:
            assert resp.status == 404 and (await resp.json())["id"] == "not_found"
        api.throttle(1, retry_after="3", reset_after=5)
        async with http.get(keys, headers=bearer) as resp:
            assert resp.status == 429 and (await resp.json())["id"] == "too_many_requests"
            assert resp.headers["retry-after"] == "3" and resp.headers["ratelimit-remaining"] == "0"
    assert api.url.startswith("http://127.0.0.1:")
