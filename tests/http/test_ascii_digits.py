"""Numeric parameters take ASCII digits only: superscript two passes str.isdigit but not int(),
and an Arabic-Indic three passes both; each is the caller's 400, never a 500 or a number read from another script."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from tests.support.api import AUDIT, BODY, SPACES, assert_envelope


@pytest.mark.parametrize("limit", ["\u00b2", "\u0663", "1\u00b2", "\uff11\uff10"])
async def test_an_audit_limit_in_other_digits_is_a_validation_error(
    client: TestClient, admin: dict, limit: str
) -> None:
    body = await assert_envelope(
        await client.get(AUDIT, params={"limit": limit}, headers=admin), 400, "VALIDATION_ERROR"
    )
    assert body["field"] == "limit"


@pytest.mark.parametrize("port", ["\u00b2", "\u0663\u0663", "\uff19\uff10\uff10\uff10"])
async def test_an_endpoint_port_in_other_digits_is_a_validation_error(
    client: TestClient, admin: dict, port: str
) -> None:
    resp = await client.put(SPACES, json={**BODY, "endpoint": f"example.com:{port}"}, headers=admin)
    body = await assert_envelope(resp, 400, "VALIDATION_ERROR")
    assert body["field"] == "endpoint"


async def test_an_if_match_version_in_other_digits_is_a_validation_error(client: TestClient, admin: dict) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    resp = await client.patch(SPACES, json={"region": "fra1"}, headers={**admin, "If-Match": '"\u0661"'})
    body = await assert_envelope(resp, 400, "VALIDATION_ERROR")
    assert body["field"] == "If-Match"
