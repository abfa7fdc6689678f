"""The failure modes an operator meets with Vault in production, each provoked against a real
OpenBao and read the way an operator reads them: /readyz, a PUT's answer, the log, Vault's own
token list and ``sys/locked-users``. Each recovers without a restart where it can."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import hvac
import pytest
from aiohttp.test_utils import TestClient

from backends.vault import VaultSecretBackend, VaultSettings, policy_for
from spacesvc.settings import Settings
from tests.support.api import BODY, SPACES, MakeClient, assert_envelope, readiness
from tests.support.faults import HungServer
from tests.support.kubernetes import TokenReviewer
from tests.support.logs import ServerLog
from tests.support.openbao import OpenBao
from tests.support.secrecy import SECRET, assert_hidden
from tests.support.timing import seconds_until


@pytest.fixture
def own_openbao(tmp_path: Path) -> Iterator[OpenBao]:
    """An OpenBao of this test's own, for changes to its auth mounts that others must not see."""
    server = OpenBao.dev_server(tmp_path / "bao")
    yield server
    server.stop()


@pytest.fixture
def name() -> str:
    """A policy and role name of this test's own (tokens are counted by their policy)."""
    return f"spacesvc-{uuid.uuid4().hex[:8]}"


def logged(server_log: ServerLog, level: str, logger: str = "spacesvc.vault") -> list[str]:
    lines = [json.loads(line) for line in server_log.lines]
    return [line["msg"] for line in lines if line["level"] == level and line["logger"] == logger]


async def readiness_detail(client: TestClient, admin: dict) -> str:
    body = await readiness(client, 503, admin)  # the detail is an admin's
    assert body["code"] == "SERVICE_UNAVAILABLE"
    return str(body["checks"]["secret_backend"]["detail"])


# -- 1. AppRole lockout ----------------------------------------------------------------------------


async def test_a_stale_secret_id_never_locks_the_role_and_a_new_one_in_the_file_is_used_at_once(
    make_client: MakeClient,
    settings: Settings,
    own_openbao: OpenBao,
    admin: dict,
    tmp_path: Path,
    name: str,
    server_log: ServerLog,
) -> None:
    """Time scaled down 300 times: Vault's default lockout (5 failures, each within 15 minutes of
    the previous one) becomes 5 failures each within 3 s of the previous one, and the service's
    back-off (16 min, then 1 h) becomes 3.2 s, then 12 s. The service is probed and written to
    every 50 ms all the while."""
    bao = own_openbao
    bao.write_policy(name, policy_for("secret", "spacesvc/spaces"))
    role_id, secret_id = bao.approle(name, [name])
    bao.tune_lockout("approle", threshold=5, duration="10m", counter_reset="3s")
    secret_id_file = tmp_path / "secret-id"
    secret_id_file.write_text("a-secret-id-that-was-destroyed\n")
    config = VaultSettings(
        addr=bao.addr, role_id=role_id, secret_id_file=str(secret_id_file), timeout=2.0, login_backoff=(3.2, 12.0)
    )
    client = await make_client(settings.with_changes(secrets=config))

    detail = await readiness_detail(client, admin)
    assert "Vault refused the AppRole login (invalid role-id or secret-id)" in detail
    assert "SPACESVC_VAULT_SECRET_ID_FILE" in detail and "lockout" in detail and "sys/locked-users" in detail
    resp = await client.put(SPACES, json=BODY, headers=admin)
    body = await assert_envelope(resp, 503, "SERVICE_UNAVAILABLE")
    assert "refused the AppRole login" in body["message"] and "sys/locked-users" in body["hint"]

    deadline = time.monotonic() + 20  # 100 minutes at the real scale
    probes = 0
    while time.monotonic() < deadline:
        assert (await client.get("/readyz")).status == 503
        if probes % 10 == 0:
            assert (await client.put(SPACES, json=BODY, headers=admin)).status == 503
        probes += 1
        await asyncio.sleep(0.05)
    refused = [line for line in logged(server_log, "warning") if "refused the AppRole login" in line]
    assert probes > 200 and len(refused) == 3  # logins at t=0, 3.2, 15.2 s; none within 3 s of another
    assert bao.locked_users() == 0
    # one line per change of state, not one per probe: the refresher's error once, readiness per refusal
    assert len(logged(server_log, "error")) == 1
    assert len(logged(server_log, "warning", "spacesvc.readiness")) == len(refused)

    # a new secret-id, delivered as Vault Agent or a Kubernetes Secret would: used at once
    secret_id_file.write_text(secret_id + "\n")
    await readiness(client, 200)
    assert (await client.put(SPACES, json=BODY, headers=admin)).status == 201
    assert_hidden(server_log.text, role_id, secret_id, where="the server log")

    # the lockout was live all along: five refusals in a row lock the role
    anonymous = hvac.Client(url=bao.addr, token="")
    for _ in range(5):
        with pytest.raises(hvac.exceptions.VaultError):
            anonymous.auth.approle.login(role_id=role_id, secret_id="wrong")
    assert bao.locked_users() == 1


async def test_two_replicas_with_the_same_stale_secret_id_stay_under_the_lockout_together(
    make_client: MakeClient, settings: Settings, own_openbao: OpenBao, tmp_path: Path, name: str
) -> None:
    """Time scaled down 100 times (OpenBao keeps failure times in whole seconds: a finer scale would
    blur its 15 minutes): failures each within 9 s of the previous one lock, the back-off is 9.6 s,
    then 36 s. The second replica starts half a back-off after the first, so that their refusals
    interleave as closely as they can: 4 in a row (a back-off of 1.2 s, then 9.6 s would make 6)."""
    bao = own_openbao
    role_id, _ = bao.approle(name, ["default"])
    bao.tune_lockout("approle", threshold=5, duration="10m", counter_reset="9s")
    secret_id_file = tmp_path / "secret-id"
    secret_id_file.write_text("a-secret-id-that-was-destroyed\n")
    config = VaultSettings(
        addr=bao.addr, role_id=role_id, secret_id_file=str(secret_id_file), timeout=2.0, login_backoff=(9.6, 36.0)
    )
    first = await make_client(settings.with_changes(secrets=config))
    started = time.monotonic()
    second: TestClient | None = None
    while time.monotonic() < started + 17:
        if second is None and time.monotonic() >= started + 4.8:
            second = await make_client(settings.with_changes(secrets=config))
        for replica in (first, second):
            if replica is not None:
                assert (await replica.get("/readyz")).status == 503
        await asyncio.sleep(0.05)
    assert bao.locked_users() == 0  # refusals at t=0, 4.8, 9.6, 14.4 s


# -- 3. revoked and expired tokens ----------------------------------------------------------------


async def test_a_revoked_approle_token_is_replaced_at_once(
    make_client: MakeClient, settings: Settings, openbao: OpenBao, admin: dict, name: str
) -> None:
    openbao.write_policy(name, policy_for("secret", "spacesvc/spaces-" + name))
    role_id, secret_id = openbao.approle(name, [name])
    config = VaultSettings(
        addr=openbao.addr, role_id=role_id, secret_id=secret_id, path="spacesvc/spaces-" + name, timeout=2.0
    )
    client = await make_client(settings.with_changes(secrets=config))
    assert (await client.put(SPACES, json=BODY, headers=admin)).status == 201

    assert openbao.revoke_tokens(name) == 1
    ready = await client.get("/readyz")
    assert ready.status == 200, await ready.text()
    resp = await client.patch(SPACES, json={"secretKey": SECRET + "-after"}, headers=admin)
    assert resp.status == 200
    assert openbao.live_tokens(name) == 1


async def test_a_revoked_static_token_is_said_to_be_revoked_not_a_policy_problem(
    make_client: MakeClient, settings: Settings, openbao: OpenBao, admin: dict, name: str
) -> None:
    openbao.write_policy(name, policy_for("secret", "spacesvc/spaces-" + name))
    token = openbao.create_token([name], ttl="1h")
    config = VaultSettings(addr=openbao.addr, token=token, path="spacesvc/spaces-" + name, timeout=2.0)
    client = await make_client(settings.with_changes(secrets=config))
    await readiness(client, 200)

    openbao.admin().auth.token.revoke(token)
    detail = await readiness_detail(client, admin)
    assert "VAULT_TOKEN has expired or was revoked" in detail and "policy" not in detail
    resp = await client.put(SPACES, json=BODY, headers=admin)
    body = await assert_envelope(resp, 503, "SERVICE_UNAVAILABLE")
    assert "VAULT_TOKEN has expired or was revoked" in body["message"] and "new" in body["hint"]


async def test_an_expired_token_is_logged_once_not_on_every_request(
    make_client: MakeClient, settings: Settings, openbao: OpenBao, admin: dict, name: str, server_log: ServerLog
) -> None:
    openbao.write_policy(name, policy_for("secret", "spacesvc/spaces-" + name))
    token = openbao.create_token([name], ttl="2s", renewable=False)
    config = VaultSettings(addr=openbao.addr, token=token, path="spacesvc/spaces-" + name, timeout=2.0)
    client = await make_client(settings.with_changes(secrets=config))
    assert (await client.put(SPACES, json=BODY, headers=admin)).status == 201

    for _ in range(40):  # 8 s: requests, probes and the refresher's ticks after the expiry
        await client.get("/readyz")
        await client.patch(SPACES, json={"secretKey": SECRET + "-x"}, headers=admin)
        await asyncio.sleep(0.2)
    assert "VAULT_TOKEN has expired or was revoked" in await readiness_detail(client, admin)
    errors = logged(server_log, "error")
    assert len(errors) == 1 and "VAULT_TOKEN has expired" in errors[0]
    assert len(logged(server_log, "warning", "spacesvc.readiness")) == 1


# -- 7. no token left behind -------------------------------------------------------------------------


async def test_denied_writes_neither_log_in_again_nor_leave_tokens_behind(
    make_client: MakeClient, settings: Settings, openbao: OpenBao, admin: dict, name: str
) -> None:
    openbao.write_policy(name, policy_for("secret", "somewhere/else"))
    role_id, secret_id = openbao.approle(name, [name])
    config = VaultSettings(
        addr=openbao.addr, role_id=role_id, secret_id=secret_id, path="spacesvc/spaces-" + name, timeout=2.0
    )
    client = await make_client(settings.with_changes(secrets=config))
    detail = await readiness_detail(client, admin)
    assert "permission denied" in detail and "token is valid" in detail
    before = openbao.live_tokens(name)

    for attempt in range(5):
        resp = await client.put(SPACES, json={**BODY, "secretKey": f"{SECRET}-{attempt}"}, headers=admin)
        body = await assert_envelope(resp, 503, "SERVICE_UNAVAILABLE")
        assert "denied permission" in body["message"]
    assert (before, openbao.live_tokens(name)) == (1, 1)

    await client.close()  # a stopping service revokes the token it logged in for
    assert openbao.live_tokens(name) == 0


async def test_a_token_replaced_at_its_max_ttl_is_revoked(
    make_client: MakeClient, settings: Settings, openbao: OpenBao, admin: dict, name: str, server_log: ServerLog
) -> None:
    openbao.write_policy(name, policy_for("secret", "spacesvc/spaces-" + name))
    role_id, secret_id = openbao.approle(name, [name], token_ttl="10s", token_max_ttl="10s")
    config = VaultSettings(
        addr=openbao.addr, role_id=role_id, secret_id=secret_id, path="spacesvc/spaces-" + name, timeout=2.0
    )
    client = await make_client(settings.with_changes(secrets=config))
    assert (await client.put(SPACES, json=BODY, headers=admin)).status == 201

    async def logged_in_again() -> bool:
        await asyncio.sleep(0.1)
        return any("logging in again" in line for line in logged(server_log, "info"))

    await seconds_until(logged_in_again, limit=15)
    # the replaced token had about 4 s to live: unrevoked, it would be counted here
    counts = []
    for _ in range(4):
        counts.append(openbao.live_tokens(name))
        await asyncio.sleep(0.8)
    assert counts == [1, 1, 1, 1]
    assert (await client.patch(SPACES, json={"secretKey": SECRET + "-later"}, headers=admin)).status == 200


# -- 4. the KV mount -----------------------------------------------------------------------------------


async def test_a_missing_kv_mount_is_named_with_the_command_that_enables_it(
    make_client: MakeClient, settings: Settings, openbao: OpenBao, admin: dict, name: str
) -> None:
    openbao.write_policy(name, policy_for(name, "spacesvc/spaces"))  # the least policy, for a mount not there
    token = openbao.create_token([name], ttl="1h")
    client = await make_client(settings.with_changes(secrets=VaultSettings(addr=openbao.addr, token=token, mount=name)))

    detail = await readiness_detail(client, admin)
    assert f"no secrets engine is mounted at {name}/" in detail
    assert f"bao secrets enable -path={name} kv-v2" in detail
    resp = await client.put(SPACES, json=BODY, headers=admin)
    body = await assert_envelope(resp, 503, "SERVICE_UNAVAILABLE")
    assert f"no secrets engine is mounted at {name}/" in body["message"] and "kv-v2" in body["hint"]

    openbao.admin().sys.enable_secrets_engine("kv", path=name, options={"version": "2"})
    assert (await client.put(SPACES, json=BODY, headers=admin)).status == 201
    await readiness(client, 200)


async def test_a_kv_version_1_mount_is_refused_and_gets_no_stray_secret(
    make_client: MakeClient, settings: Settings, openbao: OpenBao, admin: dict, name: str
) -> None:
    openbao.admin().sys.enable_secrets_engine("kv", path=name, options={"version": "1"})
    openbao.write_policy(name, policy_for(name, "spacesvc/spaces"))
    token = openbao.create_token([name], ttl="1h")
    client = await make_client(settings.with_changes(secrets=VaultSettings(addr=openbao.addr, token=token, mount=name)))

    resp = await client.put(SPACES, json=BODY, headers=admin)  # before any readiness check
    body = await assert_envelope(resp, 503, "SERVICE_UNAVAILABLE")
    assert "KV version 1" in body["message"] and f"bao kv enable-versioning {name}/" in body["hint"]
    assert "KV version 1" in await readiness_detail(client, admin)
    assert openbao.admin().list(f"{name}/") is None  # nothing was written there (KV v1 lists nothing)
    assert (await client.get(SPACES, headers=admin)).status == 200


# -- 5. a hung Vault -------------------------------------------------------------------------------------


async def test_a_hung_vault_is_reported_as_the_secret_backend_within_the_readiness_budget(
    make_client: MakeClient, settings: Settings, admin: dict
) -> None:
    hung = HungServer()
    try:
        # the production HTTP timeout (3 s) is longer than a readiness check's budget
        client = await make_client(settings.with_changes(secrets=VaultSettings(addr=hung.url, token="unused")))
        started = time.monotonic()
        body = await assert_envelope(await client.get("/readyz", headers=admin), 503, "SERVICE_UNAVAILABLE")
        took = time.monotonic() - started
        assert body["checks"]["database"]["ok"] is True and body["checks"]["migrations"]["ok"] is True
        assert body["checks"]["secret_backend"]["ok"] is False
        assert "did not answer within 2s" in body["checks"]["secret_backend"]["detail"]
        assert body["message"] == "Not ready: secret_backend failing."
        assert took < 3.0
        # probes keep answering in time while the first abandoned call is still waiting
        for _ in range(3):
            started = time.monotonic()
            assert (await client.get("/readyz")).status == 503
            assert time.monotonic() - started < 3.0
    finally:
        hung.close()


# -- 9. one name per state -------------------------------------------------------------------------------


async def test_an_uninitialized_vault_is_not_initialized_on_readyz_and_on_a_put(
    make_client: MakeClient, settings: Settings, admin: dict, tmp_path: Path
) -> None:
    bao = OpenBao.persistent(tmp_path / "bao")
    try:
        config = VaultSettings(addr=bao.addr, token="placeholder-until-init", timeout=2.0)
        client = await make_client(settings.with_changes(secrets=config))
        assert "Vault is not initialized" in await readiness_detail(client, admin)
        body = await assert_envelope(await client.put(SPACES, json=BODY, headers=admin), 503, "SERVICE_UNAVAILABLE")
        assert body["message"] == "Vault is not initialized" and "sealed" not in json.dumps(body)
        assert "operator init" in body["hint"]
    finally:
        bao.stop()


# -- 11. the startup line ----------------------------------------------------------------------------------


async def test_the_startup_line_names_address_mount_path_and_auth_method_and_no_credential(
    make_client: MakeClient, settings: Settings, openbao: OpenBao, tmp_path: Path, name: str, server_log: ServerLog
) -> None:
    openbao.write_policy(name, policy_for("secret", "spacesvc/spaces-" + name))
    role_id, secret_id = openbao.approle(name, [name])
    (tmp_path / "secret-id").write_text(secret_id)
    config = VaultSettings(
        addr=openbao.addr, role_id=role_id, secret_id_file=str(tmp_path / "secret-id"), path="spacesvc/spaces-" + name
    )
    client = await make_client(settings.with_changes(secrets=config))
    await readiness(client, 200)
    startup = [line for line in logged(server_log, "info") if line.startswith("vault backend:")]
    assert startup == [
        f"vault backend: address {openbao.addr}, KV v2 mount secret, path spacesvc/spaces-{name}, "
        f"auth AppRole (secret-id from file {tmp_path / 'secret-id'})"
    ]
    assert_hidden(server_log.text, role_id, secret_id, where="the server log")


async def test_the_login_logs_the_token_accessor_an_operator_revokes_it_with(
    make_client: MakeClient, settings: Settings, openbao: OpenBao, name: str, server_log: ServerLog
) -> None:
    openbao.write_policy(name, policy_for("secret", "spacesvc/spaces-" + name))
    role_id, secret_id = openbao.approle(name, [name])
    config = VaultSettings(addr=openbao.addr, role_id=role_id, secret_id=secret_id, path="spacesvc/spaces-" + name)
    client = await make_client(settings.with_changes(secrets=config))
    assert (await client.get("/readyz")).status == 200
    (accessor,) = openbao.token_accessors(name)
    (line,) = [line for line in logged(server_log, "info") if "token accessor" in line]
    assert line == (
        f"vault: logged in with AppRole; token accessor {accessor} (revoke: bao token revoke -accessor {accessor})"
    )
    assert openbao.revoke_tokens(name) == 1  # what the operator does with it
    assert_hidden(server_log.text, role_id, secret_id, where="the server log")


@pytest.mark.parametrize(
    ("addr", "warned"),
    [
        ("http://10.20.30.40:8200", True),
        ("http://vault.example.internal:8200", True),
        ("https://10.20.30.40:8200", False),
        ("http://127.0.0.1:8200", False),
        ("http://[::1]:8200", False),
        ("http://localhost:8200", False),
    ],
)
async def test_plain_http_to_another_machine_is_warned_about_at_start(
    server_log: ServerLog, addr: str, warned: bool
) -> None:
    """The backend is started and closed before its first call: nothing is sent to the address."""
    backend = VaultSecretBackend(VaultSettings(addr=addr, token="not-used"))
    await backend.start()
    await backend.close()
    warnings = [line for line in logged(server_log, "warning") if "plain http://" in line]
    assert len(warnings) == (1 if warned else 0)
    if warned:
        assert "use https://" in warnings[0]


# -- Kubernetes auth -------------------------------------------------------------------------------------


@pytest.fixture
async def token_reviewer() -> AsyncIterator[TokenReviewer]:
    reviewer = TokenReviewer()
    await reviewer.start()
    yield reviewer
    await reviewer.stop()


async def test_kubernetes_auth_logs_in_with_the_service_account_token_and_rereads_it(
    make_client: MakeClient,
    settings: Settings,
    own_openbao: OpenBao,
    token_reviewer: TokenReviewer,
    admin: dict,
    tmp_path: Path,
    name: str,
    server_log: ServerLog,
) -> None:
    bao = own_openbao
    bao.write_policy(name, policy_for("secret", "spacesvc/spaces"))
    token_reviewer.configure(bao, "spacesvc", namespace="apps", service_account="spacesvc", policies=[name])
    token_file = tmp_path / "token"
    first = token_reviewer.issue("apps", "spacesvc")
    token_file.write_text(first)
    config = VaultSettings(addr=bao.addr, k8s_role="spacesvc", k8s_token_file=str(token_file), timeout=2.0)
    client = await make_client(settings.with_changes(secrets=config))

    assert (await client.put(SPACES, json=BODY, headers=admin)).status == 201
    assert token_reviewer.reviews == 1 and bao.live_tokens(name) == 1

    # the kubelet rotates the projected token; the next login (here: after a revocation) reads it
    second = token_reviewer.issue("apps", "spacesvc")
    token_file.write_text(second)
    bao.revoke_tokens(name)
    await readiness(client, 200)
    assert token_reviewer.reviews == 2 and bao.live_tokens(name) == 1
    assert (await client.patch(SPACES, json={"secretKey": SECRET + "-k8s"}, headers=admin)).status == 200

    # a token the cluster does not vouch for is refused, and said so
    token_file.write_text(first[:-8] + "AAAAAAAA")
    bao.revoke_tokens(name)
    detail = await readiness_detail(client, admin)
    assert "Vault refused the Kubernetes auth login" in detail and "SPACESVC_VAULT_K8S_ROLE" in detail
    assert_hidden(server_log.text, first, second, where="the server log")
