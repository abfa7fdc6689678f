"""The ``vault`` backend: the secret in HashiCorp Vault / OpenBao KV v2, through hvac.

hvac is synchronous (requests): every call runs in a small dedicated thread pool with an HTTP
timeout, and is abandoned after a deadline a second longer, so a slow or hung Vault costs a
request a few seconds and a 503, never the event loop.

Consistency: the configuration row records which KV version holds its secret. A write adds a
new version with check-and-set and the row is updated afterwards, in the same PostgreSQL
transaction as the other fields; until that commits, the old row still reads its old version.
DELETE removes the row first and then, once that has committed, the secret's metadata and
every version (``purge``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import math
import os
import re
import tempfile
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import hvac
import hvac.exceptions
import requests
import urllib3

from backends.base import BackendSettings, Health, SecretBackend, SecretLocation
from backends.errors import BackendUnavailable, ConfigError
from backends.vault_auth import NEVER, VaultSession, is_policy_denial

log = logging.getLogger("spacesvc.vault")

DATA_KEY = "secretKey"
OWNER_KEY = "configId"
WORKERS = 4
# /readyz gives each check 2.5 s of its 3 s: Vault's health answers within that, hung or not
HEALTH_DEADLINE = 2.0
REVOKE_DEADLINE = 1.0
K8S_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
# after the 1st and every later refused login in a row (see VaultSettings.login_backoff)
LOGIN_BACKOFF = (960.0, 3600.0)
# How every "did not answer within …" begins: one state for the log, whatever the deadline.
NO_ANSWER = "Vault did not answer"

T = TypeVar("T")


@dataclass(frozen=True)
class VaultSettings(BackendSettings):
    addr: str | None = None
    token: str | None = field(default=None, repr=False)
    namespace: str | None = None
    cacert: str | None = None
    capath: str | None = None
    skip_verify: bool = False
    client_cert: str | None = None
    client_key: str | None = None
    role_id: str | None = field(default=None, repr=False)
    secret_id: str | None = field(default=None, repr=False)
    secret_id_file: str | None = None
    k8s_role: str | None = None
    k8s_token_file: str = K8S_TOKEN_FILE
    k8s_mount: str = "kubernetes"
    mount: str = "secret"
    path: str = "spacesvc/spaces"
    # The versions Vault keeps of the secret (KV v2 metadata max_versions), set on every write;
    # 0 leaves the metadata to the mount's setting.
    max_versions: int = 2
    # hvac's HTTP timeout; a call is abandoned after ``timeout + 1`` s, well inside a request's life.
    timeout: float = 3.0
    # Seconds a process delivers the secret it read for a configuration version before reading it
    # from Vault again: what is done to the secret in Vault alone (destroyed, deleted) shows in
    # deliveries within this bound (docs/guarantees.md). 0 reads Vault on every delivery.
    secret_cache: float = 1.0
    # Seconds to wait after the 1st and every later refused login in a row. Vault counts a failure
    # towards its lockout (5) only within 15 minutes of the previous one: 16 minutes apart, one
    # process never has 2 in a row, and 2 replicas with the same stale credential at most 4.
    login_backoff: tuple[float, ...] = LOGIN_BACKOFF

    @property
    def logs_in(self) -> bool:
        """AppRole or Kubernetes auth: the service logs in (and again) by itself."""
        return self.role_id is not None or self.k8s_role is not None

    @property
    def auth_method_name(self) -> str:
        return "Kubernetes auth" if self.k8s_role is not None else "AppRole" if self.role_id is not None else "token"

    @property
    def client_certificate(self) -> tuple[str, str] | None:
        return (self.client_cert, self.client_key) if self.client_cert and self.client_key else None

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, embedded: bool) -> Self:
        def get(name: str) -> str | None:
            return env.get(name, "").strip() or None

        settings = cls(
            addr=get("VAULT_ADDR"),
            token=get("VAULT_TOKEN"),
            namespace=get("VAULT_NAMESPACE"),
            cacert=get("VAULT_CACERT"),
            capath=get("VAULT_CAPATH"),
            skip_verify=parse_bool("VAULT_SKIP_VERIFY", get("VAULT_SKIP_VERIFY")),
            client_cert=get("VAULT_CLIENT_CERT"),
            client_key=get("VAULT_CLIENT_KEY"),
            role_id=get("SPACESVC_VAULT_ROLE_ID"),
            secret_id=get("SPACESVC_VAULT_SECRET_ID"),
            secret_id_file=get("SPACESVC_VAULT_SECRET_ID_FILE"),
            k8s_role=get("SPACESVC_VAULT_K8S_ROLE"),
            k8s_token_file=get("SPACESVC_VAULT_K8S_TOKEN_FILE") or K8S_TOKEN_FILE,
            k8s_mount=get("SPACESVC_VAULT_K8S_MOUNT") or cls.k8s_mount,
            mount=get("SPACESVC_VAULT_MOUNT") or cls.mount,
            path=get("SPACESVC_VAULT_PATH") or cls.path,
            max_versions=parse_count(
                "SPACESVC_VAULT_MAX_VERSIONS", get("SPACESVC_VAULT_MAX_VERSIONS"), cls.max_versions
            ),
            secret_cache=parse_seconds(
                "SPACESVC_VAULT_SECRET_CACHE", get("SPACESVC_VAULT_SECRET_CACHE"), cls.secret_cache
            ),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ConfigError naming the variable if the vault backend cannot work with these."""
        if self.addr is None:
            raise ConfigError("VAULT_ADDR is required with SPACESVC_SECRET_BACKEND=vault (e.g. https://vault:8200)")
        if not self.addr.startswith(("http://", "https://")):
            raise ConfigError("VAULT_ADDR must be an http:// or https:// URL")
        self._validate_auth()
        for variable, file in (
            ("VAULT_CACERT", self.cacert),
            ("VAULT_CLIENT_CERT", self.client_cert),
            ("VAULT_CLIENT_KEY", self.client_key),
        ):
            if file is not None and not Path(file).is_file():
                raise ConfigError(f"{variable}={file}: no such file")
        if self.capath is not None and not Path(self.capath).is_dir():
            raise ConfigError(f"VAULT_CAPATH={self.capath}: no such directory")
        if (self.client_cert is None) != (self.client_key is None):
            missing = "VAULT_CLIENT_KEY" if self.client_key is None else "VAULT_CLIENT_CERT"
            raise ConfigError(f"{missing} is required: set both VAULT_CLIENT_CERT and VAULT_CLIENT_KEY")
        for variable, value in (
            ("SPACESVC_VAULT_MOUNT", self.mount),
            ("SPACESVC_VAULT_PATH", self.path),
            ("SPACESVC_VAULT_K8S_MOUNT", self.k8s_mount),
        ):
            if not value or value != value.strip("/") or "//" in value or any(c.isspace() for c in value):
                raise ConfigError(f"{variable}={value!r} must be a path without leading or trailing '/'")

    def _validate_auth(self) -> None:
        if self.secret_id is not None and self.secret_id_file is not None:
            raise ConfigError("set either SPACESVC_VAULT_SECRET_ID or SPACESVC_VAULT_SECRET_ID_FILE, not both")
        has_secret_id = self.secret_id is not None or self.secret_id_file is not None
        if self.role_id is not None and not has_secret_id:
            raise ConfigError(
                "SPACESVC_VAULT_SECRET_ID or SPACESVC_VAULT_SECRET_ID_FILE is required with SPACESVC_VAULT_ROLE_ID "
                "(AppRole login)"
            )
        if self.role_id is None and has_secret_id:
            raise ConfigError("SPACESVC_VAULT_ROLE_ID is required for AppRole login (set both role and secret id)")
        chosen = [
            name
            for name, present in (
                ("VAULT_TOKEN", self.token is not None),
                ("SPACESVC_VAULT_ROLE_ID", self.role_id is not None),
                ("SPACESVC_VAULT_K8S_ROLE", self.k8s_role is not None),
            )
            if present
        ]
        if len(chosen) > 1:
            raise ConfigError(f"set one way to authenticate to Vault, not {' and '.join(chosen)}")
        if not chosen:
            raise ConfigError(
                "VAULT_TOKEN, AppRole (SPACESVC_VAULT_ROLE_ID with SPACESVC_VAULT_SECRET_ID or "
                "SPACESVC_VAULT_SECRET_ID_FILE) or Kubernetes auth (SPACESVC_VAULT_K8S_ROLE) is required "
                "with SPACESVC_SECRET_BACKEND=vault"
            )

    def describe(self) -> str:
        """Where and how the backend talks to Vault, for the startup log line: never a credential."""
        auth = {
            "token": "VAULT_TOKEN",
            "AppRole": "AppRole (secret-id "
            + (f"from file {self.secret_id_file})" if self.secret_id_file else "from SPACESVC_VAULT_SECRET_ID)"),
            "Kubernetes auth": f"Kubernetes auth (role {self.k8s_role} at auth/{self.k8s_mount}, "
            f"token file {self.k8s_token_file})",
        }[self.auth_method_name]
        parts = [f"address {_without_userinfo(self.addr or '')}", f"KV v2 mount {self.mount}", f"path {self.path}"]
        if self.namespace:
            parts.append(f"namespace {self.namespace}")
        parts.append(f"auth {auth}")
        if self.addr and self.addr.startswith("https://"):
            parts.append(f"TLS {self._tls_summary()}")
        return ", ".join(parts)

    def _tls_summary(self) -> str:
        if self.skip_verify:
            trust = "certificate NOT verified (VAULT_SKIP_VERIFY)"
        elif self.cacert:
            trust = f"CA {self.cacert}"
        elif self.capath:
            trust = f"CAs in {self.capath}"
        else:
            trust = "system CAs"
        return trust + (f", client certificate {self.client_cert}" if self.client_cert else "")


def parse_count(variable: str, text: str | None, default: int) -> int:
    """A whole number of 0 or more; unset is ``default``."""
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()):  # "²" is a digit to isdigit, not to int()
        raise ConfigError(f"{variable}={text!r} must be a whole number (0 leaves it to the mount)")
    return int(text)


SECONDS = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s)?")


def parse_seconds(variable: str, text: str | None, default: float) -> float:
    """A duration of 0 or more: ``1s``, ``250ms``, or a bare number of seconds; unset is ``default``."""
    if text is None:
        return default
    match = SECONDS.fullmatch(text)
    if match is None:
        raise ConfigError(f"{variable}={text!r} must be a duration such as 1s or 250ms (0: none)")
    return float(match[1]) / (1000 if match[2] == "ms" else 1)


def parse_bool(variable: str, text: str | None) -> bool:
    """A boolean as the Vault CLI reads one (Go's strconv.ParseBool); unset is false."""
    if text is None:
        return False
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ConfigError(f"{variable}={text!r} must be true or false (or 1 / 0)")


def plain_http_elsewhere(addr: str) -> bool:
    """Whether ``addr`` is http:// to a host that is not this machine (by its name or address;
    nothing is resolved): tokens and the secret would cross a network in clear text."""
    parts = urlsplit(addr)
    if parts.scheme != "http":
        return False
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def policy_for(mount: str, path: str) -> str:
    """The least a Vault policy must allow for the service (shown in hints and the README)."""
    return (
        f'path "{mount}/data/{path}" {{ capabilities = ["create", "read", "update"] }}\n'
        f'path "{mount}/metadata/{path}" {{ capabilities = ["create", "read", "update", "delete"] }}'
    )


class VaultSecretBackend(SecretBackend):
    name: ClassVar[str] = "vault"
    summary: ClassVar[str] = "HashiCorp Vault or OpenBao, KV v2, through hvac"
    variables: ClassVar[tuple[str, ...]] = (
        "VAULT_ADDR",
        "VAULT_TOKEN",
        "VAULT_NAMESPACE",
        "VAULT_CACERT",
        "VAULT_CAPATH",
        "VAULT_SKIP_VERIFY",
        "VAULT_CLIENT_CERT",
        "VAULT_CLIENT_KEY",
        "SPACESVC_VAULT_ROLE_ID",
        "SPACESVC_VAULT_SECRET_ID",
        "SPACESVC_VAULT_SECRET_ID_FILE",
        "SPACESVC_VAULT_K8S_ROLE",
        "SPACESVC_VAULT_K8S_TOKEN_FILE",
        "SPACESVC_VAULT_K8S_MOUNT",
        "SPACESVC_VAULT_MOUNT",
        "SPACESVC_VAULT_PATH",
        "SPACESVC_VAULT_MAX_VERSIONS",
        "SPACESVC_VAULT_SECRET_CACHE",
    )
    settings_class: ClassVar[type[BackendSettings]] = VaultSettings
    writable: ClassVar[bool] = True

    def __init__(self, config: VaultSettings) -> None:
        self._config = config
        self._deadline = config.timeout + 1.0
        self._executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="spacesvc-vault")
        self._trust = TrustStore(config)
        self._session = VaultSession(config, self._trust.verify)
        self._refresher: asyncio.Task[None] | None = None
        self._health_probe: asyncio.Future[Health] | None = None
        self._kv2_confirmed = False
        self._where = f"{config.mount}/{config.path}"
        self._reported: str | None = None  # the problem last logged; None while Vault works
        self._report_lock = threading.Lock()

    @property
    def secret_kept_seconds(self) -> float:
        return self._config.secret_cache

    async def start(self) -> None:
        log.info("vault backend: %s", self._config.describe())
        if plain_http_elsewhere(self._config.addr or ""):
            log.warning(
                "vault: VAULT_ADDR is plain http:// to another machine: Vault tokens and the secretKey cross the "
                "network unencrypted; use https:// (docs/vault.md, 'TLS')"
            )
        self._refresher = asyncio.create_task(self._keep_token_alive(), name="vault-token-refresher")

    def token_seconds_left(self) -> float | None:
        left = self._session.seconds_left
        return max(left, 0.0) if math.isfinite(left) else None

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        if self._config.logs_in:
            with contextlib.suppress(BackendUnavailable):
                await self._call(self._session.revoke, authenticated=False, deadline=REVOKE_DEADLINE)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._trust.close()

    async def read(self, conn: asyncpg.Connection, location: SecretLocation) -> str | None:
        if location.version is None:
            return None
        return await self._call(self._read, location)

    async def write(self, conn: asyncpg.Connection, location: SecretLocation, secret: str) -> int | None:
        return await self._call(self._write, location.owner, secret, self._path(location))

    async def delete(self, conn: asyncpg.Connection, location: SecretLocation) -> None:
        # Inside the row's transaction: only make sure Vault will take the purge that follows.
        await self._call(self._current_version, self._path(location))

    async def purge(self, location: SecretLocation) -> None:
        try:
            await self._call(self._delete_all_versions, self._path(location))
        except BackendUnavailable as error:
            log.warning("vault: a secret was deleted but its copy at %s was not: %s", self._where, error)

    def _path(self, location: SecretLocation) -> str:
        """The configuration's secret at SPACESVC_VAULT_PATH; another slot's below it."""
        return self._config.path if location.slot is None else f"{self._config.path}/{location.slot}"

    async def health(self, conn: asyncpg.Connection) -> Health:
        """Vault's state, the token, the mount and the path, within HEALTH_DEADLINE.

        One probe at a time: a probe still waiting on a hung Vault is shared, not repeated, so
        readiness checks never fill the thread pool that writes need."""
        if self._health_probe is None or self._health_probe.done():
            loop = asyncio.get_running_loop()
            call = functools.partial(self._run, self._health, authenticated=False)
            self._health_probe = loop.run_in_executor(self._executor, call)
            self._health_probe.add_done_callback(_retrieve)
        try:
            async with asyncio.timeout(HEALTH_DEADLINE):
                return await asyncio.shield(self._health_probe)
        except TimeoutError:
            slow = f"Vault at VAULT_ADDR did not answer within {HEALTH_DEADLINE:g}s: is it up?"
            self._observe(NO_ANSWER, slow)
            return Health(False, slow)
        except BackendUnavailable as error:
            self._observe_error(error)
            return Health(False, _detail(error))

    def _observe(self, problem: str | None, detail: str = "") -> None:
        """Log a change of Vault's state once, whichever call sees it first (a request, a probe,
        the token refresher): ERROR with ``detail`` (what is wrong and what to do) when
        ``problem`` differs from the last one, INFO when it works again."""
        with self._report_lock:
            if problem == self._reported:
                return
            self._reported = problem
        if problem is None:
            log.info("vault: %s works again", self._where)
        else:
            log.error("vault: %s", detail or problem)

    def _observe_error(self, error: BackendUnavailable) -> None:
        # the deadlines differ (a call's, an HTTP timeout's, a probe's): one state all the same
        problem = NO_ANSWER if str(error).startswith(NO_ANSWER) else str(error)
        self._observe(problem, _detail(error))
        error.logged = True  # said once by _observe, not again for every request that meets it

    # -- calls made in the thread pool --------------------------------------------------------

    async def _call(
        self, operation: Callable[..., T], *args: Any, authenticated: bool = True, deadline: float | None = None
    ) -> T:
        loop = asyncio.get_running_loop()
        call = functools.partial(self._run, operation, *args, authenticated=authenticated)
        deadline = self._deadline if deadline is None else deadline
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for loses a cancellation that arrives
            # as the call completes, and the token refresher would then never stop
            async with asyncio.timeout(deadline):
                result = await loop.run_in_executor(self._executor, call)
        except TimeoutError:
            error = BackendUnavailable(
                f"Vault did not answer within {deadline:g}s",
                hint="Check that Vault at VAULT_ADDR is up and not overloaded.",
            )
            self._observe_error(error)
            raise error from None
        except BackendUnavailable as error:
            self._observe_error(error)
            raise
        self._observe(None)
        return result

    def _run(self, operation: Callable[..., T], *args: Any, authenticated: bool) -> T:
        try:
            if not authenticated:
                return operation(*args)
            return self._with_token(operation, *args)
        except BackendUnavailable:
            raise
        except (requests.exceptions.RequestException, hvac.exceptions.VaultError) as error:
            raise self._unavailable(error) from None

    def _with_token(self, operation: Callable[..., T], *args: Any) -> T:
        """``operation(client, *args)`` with the session's client. A 403 for a token that is gone
        (revoked, expired) logs in again and retries once; a 403 for a valid token is a policy
        denial and raised as it is: logging in again would only leave another token behind."""
        client = self._session.client()
        try:
            return operation(client, *args)
        except hvac.exceptions.Forbidden:
            if not self._session.token_gone(client):
                raise
        return operation(self._session.replace_gone_token(client), *args)

    def _read(self, client: hvac.Client, location: SecretLocation) -> str | None:
        try:
            response = client.secrets.kv.v2.read_secret_version(
                path=self._path(location),
                version=location.version,
                mount_point=self._config.mount,
                raise_on_deleted_version=True,
            )
        except hvac.exceptions.InvalidPath as error:
            if _no_mount(error):
                raise self._mount_missing() from None
            return None
        data = response["data"]["data"]
        if data.get(OWNER_KEY) != location.owner:
            return None
        secret = data.get(DATA_KEY)
        return secret if isinstance(secret, str) else None

    def _metadata(self, client: hvac.Client, path: str | None = None) -> dict[str, Any] | None:
        """The secret's KV v2 metadata, or None when there is no secret (yet, or since a purge)."""
        try:
            metadata = client.secrets.kv.v2.read_secret_metadata(
                path=path or self._config.path, mount_point=self._config.mount
            )
        except hvac.exceptions.InvalidPath as error:
            if _no_mount(error):
                raise self._mount_missing() from None
            return None
        data: dict[str, Any] = metadata["data"]
        return data

    def _current_version(self, client: hvac.Client, path: str | None = None) -> int:
        metadata = self._metadata(client, path)
        return 0 if metadata is None else int(metadata["current_version"])

    def _keep_max_versions(self, client: hvac.Client, metadata: dict[str, Any] | None, path: str) -> None:
        """Set max_versions on the secret's metadata unless it is already so: the metadata, and the
        limit with it, is gone after a DELETE (purge) or a move to another backend and back."""
        wanted = self._config.max_versions
        if wanted == 0 or (metadata is not None and metadata.get("max_versions") == wanted):
            return
        try:
            # only this field: hvac's update_metadata would also reset delete_version_after
            client.adapter.post(f"/v1/{self._config.mount}/metadata/{path}", json={"max_versions": wanted})
        except hvac.exceptions.Forbidden as error:
            if not is_policy_denial(error):
                raise
            log.warning(
                "vault: may not set max_versions=%d on %s (SPACESVC_VAULT_MAX_VERSIONS): the secret is written, "
                "but Vault keeps the mount's number of versions; the policy needs: %s",
                wanted,
                self._where,
                policy_for(self._config.mount, self._config.path).replace("\n", " "),
            )

    def _write(self, client: hvac.Client, owner: str, secret: str, path: str) -> int:
        if not self._kv2_confirmed:
            self._check_mount(client)
        metadata = self._metadata(client, path)
        self._keep_max_versions(client, metadata, path)
        response = client.secrets.kv.v2.create_or_update_secret(
            path=path,
            secret={DATA_KEY: secret, OWNER_KEY: owner},
            cas=0 if metadata is None else int(metadata["current_version"]),
            mount_point=self._config.mount,
        )
        if not isinstance(response, dict):  # KV v1 takes the write and answers 204 without a body
            self._kv2_confirmed = False
            raise self._not_kv2("a mount that is not KV version 2")
        return int(response["data"]["version"])

    def _delete_all_versions(self, client: hvac.Client, path: str) -> None:
        client.secrets.kv.v2.delete_metadata_and_all_versions(path=path, mount_point=self._config.mount)

    def _check_mount(self, client: hvac.Client) -> None:
        """The mount exists and is KV version 2, or BackendUnavailable saying how to fix it.

        ``sys/internal/ui/mounts/<mount>`` answers any token with a capability under the mount,
        so the least policy needs no line for it."""
        self._kv2_confirmed = False  # until confirmed again: a mount may be replaced meanwhile
        try:
            mount = client.adapter.get(f"/v1/sys/internal/ui/mounts/{self._config.mount}")["data"]
        except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidPath, hvac.exceptions.InvalidRequest):
            # no mount there, or none this token may see: the path itself tells which
            self._current_version(client)
            return
        kind, version = mount.get("type"), str((mount.get("options") or {}).get("version") or "1")
        if kind not in ("kv", "generic"):
            raise self._not_kv2(f"a {kind} secrets engine")
        if version != "2":
            raise self._not_kv2(f"KV version {version}")
        self._kv2_confirmed = True

    def _health(self) -> Health:
        problem = self._server_problem()
        if problem is not None:
            self._observe_error(problem)
            return Health(False, _detail(problem))
        try:
            self._with_token(self._check_path)
        except hvac.exceptions.Forbidden as error:
            self._observe_error(self._unavailable(error))
            return Health(
                False,
                f"permission denied on {self._where}: the token is valid, but its policy must allow "
                + policy_for(self._config.mount, self._config.path).replace("\n", " "),
            )
        except BackendUnavailable as error:
            self._observe_error(error)
            return Health(False, _detail(error))
        self._observe(None)
        left = self._session.seconds_left
        lifetime = "does not expire" if left == NEVER else f"valid for {max(left, 0):.0f}s more"
        return Health(True, f"{self._where} (KV v2) reachable; {self._config.auth_method_name} {lifetime}")

    def _check_path(self, client: hvac.Client) -> None:
        self._check_mount(client)
        self._current_version(client)

    def _server_problem(self) -> BackendUnavailable | None:
        """What Vault's own state prevents (not Vault, not initialized, sealed, standby), or None."""
        unauthenticated = self._session.unauthenticated_client()
        # sys/health belongs to the root namespace: asked inside VAULT_NAMESPACE, OpenBao answers 400
        unauthenticated.adapter.namespace = None
        try:
            status = unauthenticated.sys.read_health_status(
                method="GET", standby_code=200, sealed_code=200, uninit_code=200, performance_standby_code=200
            )
        except (hvac.exceptions.InvalidPath, hvac.exceptions.InvalidRequest, hvac.exceptions.UnexpectedError):
            status = None
        if not isinstance(status, dict) or "initialized" not in status:
            return BackendUnavailable(
                "VAULT_ADDR does not answer as Vault (its sys/health is not Vault's)", hint="Check the address."
            )
        if not status.get("initialized", False):
            return BackendUnavailable(
                "Vault is not initialized",
                hint="Initialize and unseal it: `bao operator init` (or `vault operator init`).",
            )
        if status.get("sealed", True):
            return BackendUnavailable(
                "Vault is sealed", hint="Unseal it: `bao operator unseal` (or `vault operator unseal`)."
            )
        if status.get("standby", False):
            return BackendUnavailable(
                "VAULT_ADDR is a standby node", hint="Point VAULT_ADDR at the active node or the cluster address."
            )
        return None

    def _mount_missing(self) -> BackendUnavailable:
        mount = self._config.mount
        return BackendUnavailable(
            f"no secrets engine is mounted at {mount}/ (SPACESVC_VAULT_MOUNT)",
            hint=f"Enable KV version 2 there: `bao secrets enable -path={mount} kv-v2` (or `vault secrets enable "
            f"-path={mount} kv-v2`), or set SPACESVC_VAULT_MOUNT to an existing KV v2 mount.",
        )

    def _not_kv2(self, what: str) -> BackendUnavailable:
        mount = self._config.mount
        return BackendUnavailable(
            f"the mount {mount}/ (SPACESVC_VAULT_MOUNT) is {what}; spacesvc needs KV version 2",
            hint=f"Upgrade a KV v1 mount with `bao kv enable-versioning {mount}/`, or enable a KV v2 mount "
            f"(`bao secrets enable -path=<mount> kv-v2`) and set SPACESVC_VAULT_MOUNT to it.",
        )

    def _unavailable(self, error: BaseException) -> BackendUnavailable:
        """Vault's failures, told in words that help an operator and hold no secret."""
        log.debug("vault call failed: %s", type(error).__name__)
        if isinstance(error, requests.exceptions.Timeout):
            return BackendUnavailable(
                f"Vault did not answer within {self._config.timeout:g}s",
                hint="Check that Vault at VAULT_ADDR is up and not overloaded.",
            )
        if isinstance(error, requests.exceptions.RequestException):
            return BackendUnavailable(
                "Vault is not reachable",
                hint="Check VAULT_ADDR, the TLS settings (VAULT_CACERT, VAULT_CAPATH, VAULT_CLIENT_CERT) and the "
                "network to Vault.",
            )
        if isinstance(error, hvac.exceptions.VaultDown | hvac.exceptions.VaultNotInitialized):
            # the same words as /readyz: ask Vault which state it is in
            try:
                problem = self._server_problem()
            except (requests.exceptions.RequestException, hvac.exceptions.VaultError):
                problem = None
            return problem or BackendUnavailable("Vault is sealed or down", hint="See Vault's own logs.")
        if isinstance(error, hvac.exceptions.Forbidden):
            return BackendUnavailable(
                f"Vault denied permission on {self._where}",
                hint="The token is valid, but its policy needs: "
                + policy_for(self._config.mount, self._config.path).replace("\n", " "),
            )
        if isinstance(error, hvac.exceptions.InvalidPath) and _no_mount(error):
            return self._mount_missing()
        if isinstance(error, hvac.exceptions.RateLimitExceeded):
            return BackendUnavailable(
                "Vault is rate limiting requests or is a standby node", hint="Point VAULT_ADDR at the active node."
            )
        if isinstance(error, hvac.exceptions.InvalidRequest):
            return BackendUnavailable(
                f"Vault rejected the request for {self._where} (the secret may have changed concurrently)",
                hint="Retry; check that nothing else writes to SPACESVC_VAULT_PATH.",
            )
        return BackendUnavailable(f"Vault failed ({type(error).__name__})", hint="See Vault's own logs.")

    def _check_token(self, client: hvac.Client) -> None:
        """The refresher's tick: a revoked token shows here (and is replaced) within a minute."""
        try:
            client.auth.token.lookup_self()
        except hvac.exceptions.Forbidden as error:
            if not is_policy_denial(error):
                raise
            # a token without the default policy may not look itself up: nothing to learn

    async def _keep_token_alive(self) -> None:
        """Renew or replace the token in time (a change of state is logged by ``_call``)."""
        while True:
            with contextlib.suppress(BackendUnavailable):
                await self._call(self._check_token)
            await asyncio.sleep(self._session.refresh_interval)


class TrustStore:
    """requests' ``verify`` as the Vault CLI reads VAULT_SKIP_VERIFY, VAULT_CACERT and VAULT_CAPATH.

    The CLI loads every certificate in VAULT_CAPATH whatever the files are called, where
    OpenSSL's own directory lookup needs hashed names: the certificates are joined into one
    bundle file, made on first use and removed on close."""

    def __init__(self, config: VaultSettings) -> None:
        self._config = config
        self._bundle: Path | None = None
        self._lock = threading.Lock()

    def verify(self) -> bool | str:
        config = self._config
        if config.skip_verify:
            # said once, in the startup line; urllib3 would warn on every call
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            return False
        if config.cacert:
            return config.cacert
        if not config.capath:
            return True
        with self._lock:
            if self._bundle is None:
                self._bundle = self._join(Path(config.capath))
            return str(self._bundle)

    def _join(self, directory: Path) -> Path:
        certificates = []
        for file in sorted(directory.iterdir()):
            if file.is_file():
                text = file.read_text(errors="replace")
                if "-----BEGIN CERTIFICATE-----" in text:
                    certificates.append(text.strip() + "\n")
        handle, name = tempfile.mkstemp(prefix="spacesvc-vault-ca-", suffix=".pem")
        with os.fdopen(handle, "w") as bundle:
            bundle.writelines(certificates)
        return Path(name)

    def close(self) -> None:
        if self._bundle is not None:
            self._bundle.unlink(missing_ok=True)
            self._bundle = None


def _no_mount(error: hvac.exceptions.InvalidPath) -> bool:
    """Vault's 404 for a path under no mount, as opposed to a secret that does not exist."""
    return any("no handler for route" in str(message) for message in error.errors or ())


def _detail(error: BackendUnavailable) -> str:
    """A readiness detail (or log line): what is wrong, and what to do."""
    return f"{error}: {error.hint}" if error.hint else str(error)


def _retrieve(probe: asyncio.Future[Health]) -> None:
    """A probe abandoned after its deadline may fail later: retrieve that, it was answered already."""
    if not probe.cancelled():
        probe.exception()
