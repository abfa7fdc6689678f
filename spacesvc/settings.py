"""The service's configuration: read from the environment once, validated, frozen.

A bad variable raises ``ConfigError`` whose text is the one line printed at startup.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from backends import BACKEND_NAMES


class ConfigError(Exception):
    """A configuration problem; str(error) names the variable and is safe to print."""


@dataclass(frozen=True)
class EncryptionKey:
    kid: str
    key: bytes = field(repr=False)


@dataclass(frozen=True)
class RateBudget:
    """``requests`` per ``seconds``, refilled continuously (a token bucket)."""

    requests: int
    seconds: int

    @classmethod
    def from_env(cls, env: Mapping[str, str], variable: str, *, default: RateBudget | None) -> RateBudget | None:
        text = _get(env, variable)
        return default if text is None else cls.parse(text, variable)

    @classmethod
    def parse(cls, text: str, variable: str) -> RateBudget | None:
        """``N/S`` (e.g. ``600/60``), or ``off`` for no limit."""
        if text.strip().lower() == "off":
            return None
        requests, sep, seconds = text.strip().partition("/")
        if not sep or not requests.isdigit() or not seconds.isdigit() or int(requests) < 1 or int(seconds) < 1:
            raise ConfigError(f"{variable}={text!r} must be N/S (N requests per S seconds, e.g. 600/60) or off")
        return cls(int(requests), int(seconds))


@dataclass(frozen=True)
class VaultSettings:
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


@dataclass(frozen=True)
class Settings:
    database_url: str | None = field(default=None, repr=False)
    data_dir: Path = Path(".spacesvc")
    secret_backend: str = "db"
    encryption_keys: tuple[EncryptionKey, ...] = ()
    spaces_secret_key: str | None = field(default=None, repr=False)
    vault: VaultSettings = VaultSettings()
    log_level: str = "INFO"
    # Dependency bounds: a request waits at most this long for PostgreSQL.
    db_connect_timeout: float = 3.0
    db_acquire_timeout: float = 3.0
    db_statement_timeout: float = 5.0
    db_pool_max_size: int = 10
    max_body_bytes: int = 64 * 1024
    rate_limit: RateBudget | None = RateBudget(600, 60)
    auth_failure_limit: RateBudget | None = RateBudget(30, 60)
    # An Idempotency-Key record still in flight after this long was left by a crashed request.
    idempotency_in_flight_seconds: float = 60.0
    # Set once the embedded PostgreSQL (SPACESVC_DATABASE_URL unset) has been started for us.
    embedded: bool = False

    def with_changes(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        backend = _get(env, "SPACESVC_SECRET_BACKEND") or cls.secret_backend
        if backend not in BACKEND_NAMES:
            raise ConfigError(
                f"SPACESVC_SECRET_BACKEND={backend!r} is not a secret backend; "
                f"choose one of: {', '.join(BACKEND_NAMES)}"
            )
        database_url = _get(env, "SPACESVC_DATABASE_URL")
        if database_url is not None and not database_url.startswith(("postgres://", "postgresql://")):
            raise ConfigError("SPACESVC_DATABASE_URL must be a PostgreSQL URL (postgresql://user:pass@host:port/db)")
        keys = parse_encryption_keys(_get(env, "SPACESVC_ENCRYPTION_KEYS"))
        if backend == "db" and database_url is not None and not keys:
            raise ConfigError(
                "SPACESVC_ENCRYPTION_KEYS is required with the db secret backend and an external "
                "database (SPACESVC_DATABASE_URL); generate one with: "
                "spacesvc secrets genkey"
            )
        vault = VaultSettings(
            addr=_get(env, "VAULT_ADDR"),
            token=_get(env, "VAULT_TOKEN"),
            namespace=_get(env, "VAULT_NAMESPACE"),
            cacert=_get(env, "VAULT_CACERT"),
            role_id=_get(env, "SPACESVC_VAULT_ROLE_ID"),
            secret_id=_get(env, "SPACESVC_VAULT_SECRET_ID"),
            mount=_get(env, "SPACESVC_VAULT_MOUNT") or VaultSettings.mount,
            path=_get(env, "SPACESVC_VAULT_PATH") or VaultSettings.path,
        )
        if backend == "vault":
            vault.validate()
        rate_limit = RateBudget.from_env(env, "SPACESVC_RATE_LIMIT", default=cls.rate_limit)
        auth_failure_limit = RateBudget.from_env(env, "SPACESVC_AUTH_FAILURE_LIMIT", default=cls.auth_failure_limit)
        log_level = (_get(env, "SPACESVC_LOG_LEVEL") or cls.log_level).upper()
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError("SPACESVC_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR")
        return cls(
            database_url=database_url,
            data_dir=Path(_get(env, "SPACESVC_DATA_DIR") or cls.data_dir),
            secret_backend=backend,
            encryption_keys=keys,
            spaces_secret_key=env.get("SPACESVC_SPACES_SECRET_KEY") or None,
            vault=vault,
            log_level=log_level,
            rate_limit=rate_limit,
            auth_failure_limit=auth_failure_limit,
        )


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def new_encryption_key(kid: str) -> str:
    """A fresh random AES-256 key as one ``kid:base64key`` entry of SPACESVC_ENCRYPTION_KEYS."""
    return f"{kid}:{base64.b64encode(os.urandom(32)).decode()}"


def parse_encryption_keys(raw: str | None, variable: str = "SPACESVC_ENCRYPTION_KEYS") -> tuple[EncryptionKey, ...]:
    """Parse ``kid:base64key[,kid:base64key…]``; the first key encrypts, all decrypt."""
    if raw is None:
        return ()
    keys: list[EncryptionKey] = []
    for position, item in enumerate(raw.split(","), start=1):
        kid, sep, encoded = item.strip().partition(":")
        if not sep or not kid or not encoded:
            raise ConfigError(f"{variable}: entry {position} is not of the form kid:base64key")
        if not kid.replace("-", "").replace("_", "").isalnum() or len(kid) > 64:
            raise ConfigError(f"{variable}: entry {position} has a key id that is not [A-Za-z0-9_-]{{1,64}}")
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{variable}: key {kid!r} is not valid base64") from None
        if len(key) != 32:
            raise ConfigError(f"{variable}: key {kid!r} must decode to 32 bytes (AES-256), not {len(key)}")
        if any(existing.kid == kid for existing in keys):
            raise ConfigError(f"{variable}: key id {kid!r} appears twice")
        keys.append(EncryptionKey(kid, key))
    return tuple(keys)
