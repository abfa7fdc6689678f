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
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

import asyncpg
import hvac
import hvac.exceptions
import requests

from backends.base import BackendSettings, BackendUnavailable, Health, SecretBackend, SecretLocation
from spacesvc.errors import ConfigError

log = logging.getLogger("spacesvc.vault")

DATA_KEY = "secretKey"
OWNER_KEY = "configId"
WORKERS = 4
NEVER = float("inf")

T = TypeVar("T")


@dataclass(frozen=True)
class VaultSettings(BackendSettings):
    addr: str | None = None
    token: str | None = field(default=None, repr=False)
    namespace: str | None = None
    cacert: str | None = None
    role_id: str | None = None
    secret_id: str | None = field(default=None, repr=False)
    mount: str = "secret"
    path: str = "spacesvc/spaces"
    # hvac's HTTP timeout; a call is abandoned after ``timeout + 1`` s, well inside a request's life.
    timeout: float = 3.0

    @property
    def uses_approle(self) -> bool:
        return self.role_id is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, embedded: bool) -> Self:
        def get(name: str) -> str | None:
            return env.get(name, "").strip() or None

        settings = cls(
            addr=get("VAULT_ADDR"),
            token=get("VAULT_TOKEN"),
            namespace=get("VAULT_NAMESPACE"),
            cacert=get("VAULT_CACERT"),
            role_id=get("SPACESVC_VAULT_ROLE_ID"),
            secret_id=get("SPACESVC_VAULT_SECRET_ID"),
            mount=get("SPACESVC_VAULT_MOUNT") or cls.mount,
            path=get("SPACESVC_VAULT_PATH") or cls.path,
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ConfigError naming the variable if the vault backend cannot work with these."""
        if self.addr is None:
            raise ConfigError("VAULT_ADDR is required with SPACESVC_SECRET_BACKEND=vault (e.g. https://vault:8200)")
        if not self.addr.startswith(("http://", "https://")):
            raise ConfigError("VAULT_ADDR must be an http:// or https:// URL")
        if (self.role_id is None) != (self.secret_id is None):
            missing = "SPACESVC_VAULT_SECRET_ID" if self.secret_id is None else "SPACESVC_VAULT_ROLE_ID"
            raise ConfigError(f"{missing} is required for AppRole login (set both role and secret id)")
        if self.token is not None and self.role_id is not None:
            raise ConfigError("set either VAULT_TOKEN or SPACESVC_VAULT_ROLE_ID/SPACESVC_VAULT_SECRET_ID, not both")
        if self.token is None and self.role_id is None:
            raise ConfigError(
                "VAULT_TOKEN (or SPACESVC_VAULT_ROLE_ID and SPACESVC_VAULT_SECRET_ID) is required "
                "with SPACESVC_SECRET_BACKEND=vault"
            )
        if self.cacert is not None and not Path(self.cacert).is_file():
            raise ConfigError(f"VAULT_CACERT={self.cacert}: no such file")
        for variable, value in (("SPACESVC_VAULT_MOUNT", self.mount), ("SPACESVC_VAULT_PATH", self.path)):
            if not value or value != value.strip("/") or "//" in value or any(c.isspace() for c in value):
                raise ConfigError(f"{variable}={value!r} must be a path without leading or trailing '/'")


def policy_for(mount: str, path: str) -> str:
    """The least a Vault policy must allow for the service (shown in hints and the README)."""
    return (
        f'path "{mount}/data/{path}" {{ capabilities = ["create", "read", "update"] }}\n'
        f'path "{mount}/metadata/{path}" {{ capabilities = ["read", "delete"] }}'
    )


class VaultSession:
    """One authenticated hvac client, kept alive: renewed before expiry, re-login for AppRole.

    Thread-safe; every method runs in the backend's thread pool, never on the event loop.
    """

    def __init__(self, config: VaultSettings) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._client: hvac.Client | None = None
        self._expires_at = NEVER  # time.monotonic() deadline of the current token
        self._period = NEVER  # the token's last granted TTL
        self._renewable = False
        self.problem: str | None = None  # why authentication fails now; safe to show

    @property
    def refresh_interval(self) -> float:
        return 30.0 if self._period == NEVER else min(max(self._period / 4, 0.5), 60.0)

    @property
    def seconds_left(self) -> float:
        return self._expires_at - time.monotonic()

    def unauthenticated_client(self) -> hvac.Client:
        return hvac.Client(
            url=self._config.addr,
            token="",  # never hvac's fallback to VAULT_TOKEN / ~/.vault-token: we pass it
            verify=self._config.cacert or True,
            timeout=self._config.timeout,
            namespace=self._config.namespace,
        )

    def client(self) -> hvac.Client:
        """An authenticated client, refreshing the token first when it is due."""
        with self._lock:
            if self._client is None:
                self._client = self.unauthenticated_client()
                self._authenticate(self._client)
            elif self.seconds_left < self._period / 2:
                self._refresh(self._client)
            return self._client

    def relogin(self) -> None:
        """After Vault refused an AppRole token (it ran out between refreshes): log in again."""
        with self._lock:
            if self._client is not None and self._config.uses_approle:
                self._authenticate(self._client)

    def _authenticate(self, client: hvac.Client) -> None:
        try:
            if self._config.uses_approle:
                auth = client.auth.approle.login(
                    role_id=self._config.role_id, secret_id=self._config.secret_id, use_token=True
                )["auth"]
                self._set_lease(auth["lease_duration"], auth["renewable"])
            else:
                client.token = self._config.token
                data = client.auth.token.lookup_self()["data"]
                self._set_lease(int(data.get("ttl") or 0), bool(data.get("renewable")))
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized, hvac.exceptions.InvalidRequest) as error:
            how = "AppRole login" if self._config.uses_approle else "VAULT_TOKEN"
            self.problem = f"Vault refused the {how} ({type(error).__name__})"
            self._client = None
            raise BackendUnavailable(self.problem, hint=self._auth_hint()) from None
        except BaseException:
            self._client = None
            raise
        self.problem = None

    def _refresh(self, client: hvac.Client) -> None:
        if self._renewable:
            try:
                auth = client.auth.token.renew_self()["auth"]
                previous = self._period
                self._set_lease(auth["lease_duration"], auth["renewable"])
                if self._period >= previous / 2:
                    return
                # the token reached its max TTL: renewing no longer extends it
                self._renewable = False
            except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest):
                self._renewable = False
            except hvac.exceptions.InternalServerError as error:
                # OpenBao answers 500 "past the max TTL, cannot renew" in the last moments of a token
                if not any("max TTL" in str(message) for message in error.errors or ()):
                    raise
                self._renewable = False
        if self._config.uses_approle:
            log.info("vault: logging in again with AppRole")
            self._authenticate(client)
            return
        if self.seconds_left <= 0:
            self.problem = "the Vault token has expired and can be neither renewed nor replaced"
            log.error("vault: %s", self.problem)
            raise BackendUnavailable(self.problem, hint=self._auth_hint())

    def _set_lease(self, ttl: int, renewable: bool) -> None:
        self._period = float(ttl) if ttl > 0 else NEVER
        self._expires_at = time.monotonic() + self._period
        self._renewable = bool(renewable) and ttl > 0

    def _auth_hint(self) -> str:
        if self._config.uses_approle:
            return "Check SPACESVC_VAULT_ROLE_ID / SPACESVC_VAULT_SECRET_ID and the role's secret_id TTL."
        return "Give the service a valid, renewable VAULT_TOKEN (or use AppRole) and restart it."


class VaultSecretBackend(SecretBackend):
    name: ClassVar[str] = "vault"
    summary: ClassVar[str] = "HashiCorp Vault or OpenBao, KV v2, through hvac"
    variables: ClassVar[tuple[str, ...]] = (
        "VAULT_ADDR",
        "VAULT_TOKEN",
        "VAULT_NAMESPACE",
        "VAULT_CACERT",
        "SPACESVC_VAULT_ROLE_ID",
        "SPACESVC_VAULT_SECRET_ID",
        "SPACESVC_VAULT_MOUNT",
        "SPACESVC_VAULT_PATH",
    )
    settings_class: ClassVar[type[BackendSettings]] = VaultSettings
    writable: ClassVar[bool] = True

    def __init__(self, config: VaultSettings) -> None:
        self._config = config
        self._deadline = config.timeout + 1.0
        self._executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="spacesvc-vault")
        self._session = VaultSession(config)
        self._refresher: asyncio.Task[None] | None = None
        self._where = f"{config.mount}/{config.path}"

    async def start(self) -> None:
        self._refresher = asyncio.create_task(self._keep_token_alive(), name="vault-token-refresher")

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def read(self, conn: asyncpg.Connection, location: SecretLocation) -> str | None:
        if location.version is None:
            return None
        return await self._call(self._read, location)

    async def write(self, conn: asyncpg.Connection, location: SecretLocation, secret: str) -> int | None:
        return await self._call(self._write, location.owner, secret)

    async def delete(self, conn: asyncpg.Connection, location: SecretLocation) -> None:
        # Inside the row's transaction: only make sure Vault will take the purge that follows.
        await self._call(self._current_version)

    async def purge(self, location: SecretLocation) -> None:
        try:
            await self._call(self._delete_all_versions)
        except BackendUnavailable as error:
            log.warning("vault: the configuration was deleted but its secret at %s was not: %s", self._where, error)

    async def health(self, conn: asyncpg.Connection) -> Health:
        try:
            return await self._call(self._health, authenticated=False)
        except BackendUnavailable as error:
            return Health(False, str(error))

    # -- calls made in the thread pool --------------------------------------------------------

    async def _call(self, operation: Callable[..., T], *args: Any, authenticated: bool = True) -> T:
        loop = asyncio.get_running_loop()
        call = functools.partial(self._run, operation, *args, authenticated=authenticated)
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for loses a cancellation that arrives
            # as the call completes, and the token refresher would then never stop
            async with asyncio.timeout(self._deadline):
                return await loop.run_in_executor(self._executor, call)
        except TimeoutError:
            raise BackendUnavailable(
                f"Vault did not answer within {self._deadline:g}s",
                hint="Check that Vault at VAULT_ADDR is up and not overloaded.",
            ) from None

    def _run(self, operation: Callable[..., T], *args: Any, authenticated: bool) -> T:
        try:
            if not authenticated:
                return operation(self._session.unauthenticated_client(), *args)
            try:
                return operation(self._session.client(), *args)
            except hvac.exceptions.Forbidden:
                if not self._config.uses_approle:
                    raise
                self._session.relogin()  # an AppRole token may have run out between refreshes
                return operation(self._session.client(), *args)
        except BackendUnavailable:
            raise
        except (requests.exceptions.RequestException, hvac.exceptions.VaultError) as error:
            raise self._unavailable(error) from None

    def _read(self, client: hvac.Client, location: SecretLocation) -> str | None:
        try:
            response = client.secrets.kv.v2.read_secret_version(
                path=self._config.path,
                version=location.version,
                mount_point=self._config.mount,
                raise_on_deleted_version=True,
            )
        except hvac.exceptions.InvalidPath:
            return None
        data = response["data"]["data"]
        if data.get(OWNER_KEY) != location.owner:
            return None
        secret = data.get(DATA_KEY)
        return secret if isinstance(secret, str) else None

    def _current_version(self, client: hvac.Client) -> int:
        try:
            metadata = client.secrets.kv.v2.read_secret_metadata(path=self._config.path, mount_point=self._config.mount)
        except hvac.exceptions.InvalidPath:
            return 0
        return int(metadata["data"]["current_version"])

    def _write(self, client: hvac.Client, owner: str, secret: str) -> int:
        response = client.secrets.kv.v2.create_or_update_secret(
            path=self._config.path,
            secret={DATA_KEY: secret, OWNER_KEY: owner},
            cas=self._current_version(client),
            mount_point=self._config.mount,
        )
        return int(response["data"]["version"])

    def _delete_all_versions(self, client: hvac.Client) -> None:
        client.secrets.kv.v2.delete_metadata_and_all_versions(path=self._config.path, mount_point=self._config.mount)

    def _health(self, unauthenticated: hvac.Client) -> Health:
        # sys/health belongs to the root namespace: asked inside VAULT_NAMESPACE, OpenBao answers 400
        unauthenticated.adapter.namespace = None
        try:
            status = unauthenticated.sys.read_health_status(
                method="GET", standby_code=200, sealed_code=200, uninit_code=200, performance_standby_code=200
            )
        except (hvac.exceptions.InvalidPath, hvac.exceptions.InvalidRequest, hvac.exceptions.UnexpectedError):
            status = None
        if not isinstance(status, dict) or "initialized" not in status:
            return Health(
                False, "VAULT_ADDR does not answer as Vault (its sys/health is not Vault's): check the address"
            )
        if not status.get("initialized", False):
            return Health(False, "Vault is not initialized: run `vault operator init` (or `bao operator init`)")
        if status.get("sealed", True):
            return Health(False, "Vault is sealed: unseal it with `vault operator unseal` before secrets can be used")
        if status.get("standby", False):
            return Health(False, "VAULT_ADDR is a standby node: point it at the active node or the cluster address")
        try:
            self._current_version(self._session.client())
        except hvac.exceptions.Forbidden:
            return Health(False, f"permission denied on {self._where}: the token's policy must allow it")
        left = self._session.seconds_left
        lifetime = "does not expire" if left == NEVER else f"valid for {max(left, 0):.0f}s more"
        auth = "AppRole" if self._config.uses_approle else "token"
        return Health(True, f"{self._where} reachable; {auth} {lifetime}")

    def _unavailable(self, error: BaseException) -> BackendUnavailable:
        """Vault's failures, told in words that help an operator and hold no secret."""
        log.warning("vault call failed: %s", type(error).__name__)
        if isinstance(error, requests.exceptions.Timeout):
            return BackendUnavailable(
                f"Vault did not answer within {self._config.timeout:g}s",
                hint="Check that Vault at VAULT_ADDR is up and not overloaded.",
            )
        if isinstance(error, requests.exceptions.RequestException):
            return BackendUnavailable(
                "Vault is not reachable", hint="Check VAULT_ADDR, VAULT_CACERT and the network to Vault."
            )
        if isinstance(error, hvac.exceptions.VaultDown):
            return BackendUnavailable("Vault is sealed or down", hint="Unseal Vault (`vault operator unseal`).")
        if isinstance(error, hvac.exceptions.VaultNotInitialized):
            return BackendUnavailable("Vault is not initialized", hint="Initialize and unseal Vault.")
        if isinstance(error, hvac.exceptions.Forbidden):
            return BackendUnavailable(
                f"Vault denied permission on {self._where}",
                hint="The token's policy needs: "
                + policy_for(self._config.mount, self._config.path).replace("\n", " "),
            )
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

    async def _keep_token_alive(self) -> None:
        reported: str | None = None
        while True:
            try:
                await self._call(lambda client: None)
                if reported is not None:
                    log.info("vault: authenticated again")
                reported = None
            except BackendUnavailable as error:
                if str(error) != reported:
                    log.error("vault: %s", error)
                reported = str(error)
            await asyncio.sleep(self._session.refresh_interval)
