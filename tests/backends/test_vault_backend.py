"""The vault backend against a real OpenBao: the shared contract, versions, binding, auth."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import hvac
import pytest

from backends import SecretBackend, SecretLocation
from backends.vault import VaultSecretBackend, VaultSettings, policy_for
from spacesvc.errors import ConfigError
from tests.backends.contract import OWNER, WritableBackendContract
from tests.support.logs import ServerLog, log_lines
from tests.support.openbao import OpenBao
from tests.support.s3 import MotoS3
from tests.support.secrecy import SECRET, assert_hidden
from tests.support.tls import PrivateCA


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


async def test_a_policy_that_may_not_update_the_metadata_still_writes_and_warns(
    openbao: OpenBao, vault_config: VaultSettings, conn: asyncpg.Connection, server_log: ServerLog
) -> None:
    """The policy of earlier releases (metadata: read, delete): the secret is written, and the log
    says the history limit could not be set and which policy line is missing."""
    path = vault_config.path
    openbao.write_policy(
        "spacesvc-earlier",
        f'path "secret/data/{path}" {{ capabilities = ["create", "read", "update"] }}\n'
        f'path "secret/metadata/{path}" {{ capabilities = ["read", "delete"] }}',
    )
    token = openbao.create_token(["spacesvc-earlier"], ttl="1h")
    backend = VaultSecretBackend(VaultSettings(addr=openbao.addr, token=token, path=path, timeout=2.0))
    try:
        version = await backend.write(conn, OWNER, SECRET)
        assert await backend.read(conn, SecretLocation(OWNER.owner, version)) == SECRET
    finally:
        await backend.close()
    (warning,) = [line["msg"] for line in log_lines(server_log.text) if "max_versions" in line["msg"]]
    assert "SPACESVC_VAULT_MAX_VERSIONS" in warning and '"create", "read", "update", "delete"' in warning


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


# -- TLS, as the Vault CLI reads VAULT_CAPATH, VAULT_SKIP_VERIFY and VAULT_CLIENT_CERT/KEY -------------


@pytest.fixture(scope="module")
def tls_openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    server = OpenBao.dev_server(tmp_path_factory.mktemp("tls-openbao"), tls=True)
    yield server
    server.stop()


async def test_vault_capath_trusts_every_certificate_in_the_directory_whatever_its_name(
    tls_openbao: OpenBao, tmp_path: Path, conn: asyncpg.Connection
) -> None:
    capath = tmp_path / "cas"
    capath.mkdir()
    shutil.copy(tls_openbao.ca_cert, capath / "our-vault-ca.crt")  # not OpenSSL's hashed name
    (capath / "README").write_text("not a certificate\n")
    settings = VaultSettings.from_env(
        {"VAULT_ADDR": tls_openbao.addr, "VAULT_TOKEN": tls_openbao.root_token, "VAULT_CAPATH": str(capath)},
        embedded=False,
    )
    backend = VaultSecretBackend(settings)
    try:
        health = await backend.health(conn)
        assert health.ok, health.detail
    finally:
        await backend.close()


async def test_vault_skip_verify_connects_without_the_ca_and_says_so_at_startup(
    tls_openbao: OpenBao, conn: asyncpg.Connection, server_log: ServerLog
) -> None:
    env = {"VAULT_ADDR": tls_openbao.addr, "VAULT_TOKEN": tls_openbao.root_token}
    verified = VaultSecretBackend(VaultSettings.from_env({**env, "VAULT_SKIP_VERIFY": "false"}, embedded=False))
    unverified = VaultSecretBackend(VaultSettings.from_env({**env, "VAULT_SKIP_VERIFY": "true"}, embedded=False))
    try:
        await unverified.start()
        assert (await unverified.health(conn)).ok
        assert "not reachable" in (await verified.health(conn)).detail
    finally:
        await unverified.close()
        await verified.close()
    assert any("certificate NOT verified (VAULT_SKIP_VERIFY)" in line for line in server_log.lines)
    assert_hidden(server_log.text, tls_openbao.root_token, where="the server log")


async def test_a_client_certificate_is_presented_to_a_vault_that_requires_one(
    tmp_path: Path, conn: asyncpg.Connection
) -> None:
    ca = PrivateCA(tmp_path / "pki")
    bao, mtls_addr = OpenBao.dev_server_with_client_certificates(tmp_path / "bao", ca)
    try:
        cert, key = ca.issue("spacesvc", server=False)
        env = {"VAULT_ADDR": mtls_addr, "VAULT_TOKEN": bao.root_token, "VAULT_CACERT": str(ca.cert_file)}
        with_cert = VaultSecretBackend(
            VaultSettings.from_env(
                {**env, "VAULT_CLIENT_CERT": str(cert), "VAULT_CLIENT_KEY": str(key)}, embedded=False
            )
        )
        without = VaultSecretBackend(VaultSettings.from_env(env, embedded=False))
        try:
            health = await with_cert.health(conn)
            assert health.ok, health.detail
            version = await with_cert.write(conn, OWNER, SECRET)
            assert await with_cert.read(conn, SecretLocation(OWNER.owner, version)) == SECRET
            assert "not reachable" in (await without.health(conn)).detail
        finally:
            await with_cert.close()
            await without.close()
    finally:
        bao.stop()


# -- settings: one line naming the variable ---------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VAULT_TOKEN": "t", "SPACESVC_VAULT_K8S_ROLE": "r"}, "not VAULT_TOKEN and SPACESVC_VAULT_K8S_ROLE"),
        ({"SPACESVC_VAULT_ROLE_ID": "r"}, "SPACESVC_VAULT_SECRET_ID or SPACESVC_VAULT_SECRET_ID_FILE is required"),
        ({"SPACESVC_VAULT_SECRET_ID_FILE": "/f"}, "SPACESVC_VAULT_ROLE_ID is required"),
        (
            {"SPACESVC_VAULT_ROLE_ID": "r", "SPACESVC_VAULT_SECRET_ID": "s", "SPACESVC_VAULT_SECRET_ID_FILE": "/f"},
            "either SPACESVC_VAULT_SECRET_ID or SPACESVC_VAULT_SECRET_ID_FILE",
        ),
        ({"VAULT_TOKEN": "t", "VAULT_SKIP_VERIFY": "yes"}, "VAULT_SKIP_VERIFY='yes' must be true or false"),
        ({"VAULT_TOKEN": "t", "VAULT_CAPATH": "/nonexistent"}, "VAULT_CAPATH=/nonexistent: no such directory"),
        ({"VAULT_TOKEN": "t", "VAULT_CLIENT_CERT": "/etc/hostname"}, "VAULT_CLIENT_KEY is required"),
        ({}, "VAULT_TOKEN, AppRole"),
        ({"VAULT_TOKEN": "t", "SPACESVC_VAULT_SECRET_CACHE": "1 minute"}, "SPACESVC_VAULT_SECRET_CACHE='1 minute'"),
    ],
)
def test_a_bad_vault_configuration_is_one_line_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        VaultSettings.from_env({"VAULT_ADDR": "https://vault:8200", **env}, embedded=False)
    assert message in str(error.value)


@pytest.mark.unit
@pytest.mark.parametrize(("text", "seconds"), [(None, 1.0), ("0", 0.0), ("250ms", 0.25), ("2s", 2.0), ("1.5", 1.5)])
def test_the_vault_secret_cache_is_a_duration_of_one_second_by_default(text: str | None, seconds: float) -> None:
    env = {"VAULT_ADDR": "https://vault:8200", "VAULT_TOKEN": "t"}
    if text is not None:
        env["SPACESVC_VAULT_SECRET_CACHE"] = text
    settings = VaultSettings.from_env(env, embedded=False)
    assert VaultSecretBackend(settings).secret_kept_seconds == seconds


@pytest.mark.unit
def test_kubernetes_auth_reads_the_service_account_token_from_its_default_place() -> None:
    settings = VaultSettings.from_env(
        {"VAULT_ADDR": "https://vault:8200", "SPACESVC_VAULT_K8S_ROLE": "spacesvc"}, embedded=False
    )
    assert (settings.k8s_token_file, settings.k8s_mount) == (
        "/var/run/secrets/kubernetes.io/serviceaccount/token",
        "kubernetes",
    )
    assert settings.describe() == (
        "address https://vault:8200, KV v2 mount secret, path spacesvc/spaces, auth Kubernetes auth (role spacesvc "
        "at auth/kubernetes, token file /var/run/secrets/kubernetes.io/serviceaccount/token), TLS system CAs"
    )
