"""The env backend: the secret is SPACESVC_SPACES_SECRET_KEY, read-only through the API."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from backends import SecretBackend
from backends.env import EnvSecretBackend, EnvSettings
from spacesvc.settings import Settings
from tests.backends.contract import ReadOnlyBackendContract
from tests.support.api import SPACES, MakeClient, assert_envelope
from tests.support.secrecy import SECRET, assert_hidden

ENV_SECRET = "env-provided-secret-value-0123456789"


class TestEnvBackendContract(ReadOnlyBackendContract):
    configured_secret = ENV_SECRET

    @pytest.fixture
    def backend(self) -> SecretBackend:
        return EnvSecretBackend(EnvSettings(ENV_SECRET))


@pytest.fixture
async def env_client(make_client: MakeClient, settings: Settings) -> TestClient:
    return await make_client(settings.with_changes(secrets=EnvSettings(ENV_SECRET)))


async def test_creation_needs_no_secret_and_reports_the_variable(env_client: TestClient, admin: dict) -> None:
    resp = await env_client.put(SPACES, json={"accessKey": "AK"}, headers=admin)
    assert resp.status == 201
    config = (await resp.json())["config"]
    assert config["secretBackend"] == "env" and config["hasSecretKey"] is True


async def test_secret_key_in_put_or_patch_is_readonly_naming_the_variable(env_client: TestClient, admin: dict) -> None:
    resp = await env_client.put(SPACES, json={"accessKey": "AK", "secretKey": SECRET}, headers=admin)
    body = await assert_envelope(resp, 422, "READONLY_FIELD")
    assert body["field"] == "secretKey" and "SPACESVC_SPACES_SECRET_KEY" in body["hint"]
    assert body["message"] == 'Field "secretKey" is read-only and cannot be set via PUT.'
    assert_hidden(await resp.text(), SECRET, where="the error")
    await env_client.put(SPACES, json={"accessKey": "AK"}, headers=admin)
    resp = await env_client.patch(SPACES, json={"secretKey": SECRET}, headers=admin)
    body = await assert_envelope(resp, 422, "READONLY_FIELD")
    assert "SPACESVC_SPACES_SECRET_KEY" in body["hint"]


async def test_has_secret_key_is_false_when_the_variable_is_unset(
    make_client: MakeClient, settings: Settings, admin: dict
) -> None:
    client = await make_client(settings.with_changes(secrets=EnvSettings(None)))
    resp = await client.put(SPACES, json={"accessKey": "AK"}, headers=admin)
    assert (await resp.json())["config"]["hasSecretKey"] is False
