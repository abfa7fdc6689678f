"""The vault backend against a real OpenBao: the shared contract, versions, binding, auth."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import hvac
import pytest

from backends import SecretBackend, SecretLocation
from backends.vault import VaultSecretBackend, VaultSettings, policy_for
from tests.backends.contract import OWNER, WritableBackendContract
from tests.support.openbao import OpenBao
from tests.support.s3 import MotoS3
from tests.support.secrecy import SECRET


@pytest.fixture
async def vault_backend(vault_config: VaultSettings) -> AsyncIterator[VaultSecretBackend]:
    backend = VaultSecretBackend(vault_config)
    await backend.start()
    yield backend
    await backend.close()


class TestVaultBackendContract(WritableBackendContract):
    @pytest.fixture
    async def backend(self, vault_backend: VaultSecretBackend) -> SecretBackend:
        return vault_backend


async def test_the_secret_is_stored_at_the_documented_path_and_key(
    vault_backend: VaultSecretBackend, vault_config: VaultSettings, openbao: OpenBao, conn: asyncpg.Connection
) -> None:
    version = await vault_backend.write(conn, OWNER, SECRET)
    stored = openbao.admin().secrets.kv.v2.read_secret_version(
        path=vault_config.path, mount_point="secret", raise_on_deleted_version=True
    )
    assert stored["data"]["data"]["secretKey"] == SECRET
    assert stored["data"]["metadata"]["version"] == version


async def test_each_write_is_a_new_kv_version_and_old_versions_stay_readable(
    vault_backend: VaultSecretBackend, conn: asyncpg.Connection
) -> None:
    first = await vault_backend.write(conn, OWNER, SECRET)
    second = await vault_backend.write(conn, OWNER, SECRET + "-2")
    assert first is not None and second == first + 1
    assert await vault_backend.read(conn, SecretLocation(OWNER.owner, first)) == SECRET
    assert await vault_backend.read(conn, SecretLocation(OWNER.owner, second)) == SECRET + "-2"


async def test_purge_removes_the_metadata_and_every_version(
    vault_backend: VaultSecretBackend, vault_config: VaultSettings, openbao: OpenBao, conn: asyncpg.Connection
) -> None:
    await vault_backend.write(conn, OWNER, SECRET)
    await vault_backend.write(conn, OWNER, SECRET + "-2")
    await vault_backend.purge(OWNER)
    with pytest.raises(hvac.exceptions.InvalidPath):
        openbao.admin().secrets.kv.v2.read_secret_metadata(path=vault_config.path, mount_point="secret")


async def test_approle_with_a_policy_limited_to_the_path_works(
    openbao: OpenBao, vault_config: VaultSettings, conn: asyncpg.Connection
) -> None:
    openbao.write_policy("spacesvc-limited", policy_for("secret", vault_config.path))
    role_id, secret_id = openbao.approle("spacesvc-limited", ["spacesvc-limited"])
    config = VaultSettings(addr=openbao.addr, role_id=role_id, secret_id=secret_id, path=vault_config.path, timeout=2.0)
    backend = VaultSecretBackend(config)
    try:
        assert (await backend.health(conn)).ok
        version = await backend.write(conn, OWNER, SECRET)
        assert await backend.read(conn, SecretLocation(OWNER.owner, version)) == SECRET
        await backend.purge(OWNER)
    finally:
        await backend.close()


async def test_a_policy_without_the_path_is_reported_as_permission_denied(
    openbao: OpenBao, vault_config: VaultSettings, conn: asyncpg.Connection
) -> None:
    openbao.write_policy("elsewhere", policy_for("secret", "somewhere/else"))
    token = openbao.create_token(["elsewhere"], ttl="1h")
    backend = VaultSecretBackend(VaultSettings(addr=openbao.addr, token=token, path=vault_config.path, timeout=2.0))
    try:
        health = await backend.health(conn)
        assert not health.ok and "permission denied" in health.detail
    finally:
        await backend.close()


async def test_vault_cacert_is_honoured_for_a_tls_vault(tmp_path: Path, conn: asyncpg.Connection) -> None:
    bao = OpenBao.dev_server(tmp_path, tls=True)
    try:
        trusted = VaultSecretBackend(
            VaultSettings(addr=bao.addr, token=bao.root_token, cacert=str(bao.ca_cert), timeout=2.0)
        )
        untrusted = VaultSecretBackend(VaultSettings(addr=bao.addr, token=bao.root_token, timeout=2.0))
        try:
            assert (await trusted.health(conn)).ok
            version = await trusted.write(conn, OWNER, SECRET)
            assert await trusted.read(conn, SecretLocation(OWNER.owner, version)) == SECRET
            health = await untrusted.health(conn)
            assert not health.ok and "not reachable" in health.detail
        finally:
            await trusted.close()
            await untrusted.close()
    finally:
        bao.stop()


async def test_vault_namespace_is_honoured(
    openbao: OpenBao, vault_config: VaultSettings, conn: asyncpg.Connection
) -> None:
    namespace = f"team-{vault_config.path.rsplit('-', 1)[-1]}"
    openbao.admin().adapter.post(f"/v1/sys/namespaces/{namespace}")
    in_namespace = hvac.Client(url=openbao.addr, token=openbao.root_token, namespace=namespace)
    in_namespace.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    backend = VaultSecretBackend(
        VaultSettings(
            addr=openbao.addr, token=openbao.root_token, namespace=namespace, path=vault_config.path, timeout=2.0
        )
    )
    try:
        health = await backend.health(conn)  # sys/health is asked in the root namespace
        assert health.ok, health.detail
        version = await backend.write(conn, OWNER, SECRET)
    finally:
        await backend.close()
    stored = in_namespace.secrets.kv.v2.read_secret_version(
        path=vault_config.path, version=version, mount_point="secret", raise_on_deleted_version=True
    )
    assert stored["data"]["data"]["secretKey"] == SECRET
    with pytest.raises(hvac.exceptions.InvalidPath):
        openbao.admin().secrets.kv.v2.read_secret_metadata(path=vault_config.path, mount_point="secret")


async def test_closing_the_backend_while_a_vault_call_completes_never_hangs(vault_config: VaultSettings) -> None:
    """A service stopping during a token check must stop: the cancellation may not be lost.

    (asyncio.wait_for in Python 3.11 swallows a cancellation that arrives as the call completes,
    which left the token refresher running and the shutdown waiting for it for ever.)
    """
    for attempt in range(60):
        backend = VaultSecretBackend(vault_config)
        await backend.start()
        await asyncio.sleep(0.001 * (attempt % 12))  # close at every stage of the first token check
        try:
            async with asyncio.timeout(5):
                await backend.close()
        except TimeoutError:
            pytest.fail(f"close() hung (attempt {attempt + 1})", pytrace=False)


async def test_an_address_that_is_not_vault_is_reported_as_such(s3: MotoS3, conn: asyncpg.Connection) -> None:
    backend = VaultSecretBackend(VaultSettings(addr=s3.url, token="not-a-vault-token", timeout=2.0))
    try:
        health = await backend.health(conn)
    finally:
        await backend.close()
    assert not health.ok and "does not answer as Vault" in health.detail
