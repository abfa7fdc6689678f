"""The service's configuration: read from the environment once, validated, frozen.

A bad variable raises ``ConfigError`` whose text is the one line printed at startup.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

import backends
from backends import BackendSettings
from backends.db import DbSettings
from spacesvc.errors import ConfigError

DEFAULT_SECRET_BACKEND = "db"
DEFAULT_DIGITALOCEAN_API_URL = "https://api.digitalocean.com"
DEFAULT_IAM_ENDPOINT = "https://iam.amazonaws.com"
DEFAULT_KEY_PREFIX = "spacesvc-"
# What both DigitalOcean key names and IAM user names accept, short enough to leave room for an
# environment's name and a counter.
KEY_PREFIX = re.compile(r"^[A-Za-z0-9+=,.@_-]{1,32}$")


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
        if not sep or not ascii_number(requests) or not ascii_number(seconds) or int(requests) < 1 or int(seconds) < 1:
            raise ConfigError(f"{variable}={text!r} must be N/S (N requests per S seconds, e.g. 600/60) or off")
        return cls(int(requests), int(seconds))


@dataclass(frozen=True)
class Settings:
    database_url: str | None = field(default=None, repr=False)
    data_dir: Path = Path(".spacesvc")
    # The selected secret backend's own settings (its module reads them from the environment).
    secrets: BackendSettings = field(default_factory=DbSettings)
    log_level: str = "INFO"
    # Dependency bounds: a request waits at most this long for PostgreSQL.
    db_connect_timeout: float = 3.0
    db_acquire_timeout: float = 3.0
    db_statement_timeout: float = 5.0
    db_pool_max_size: int = 10
    max_body_bytes: int = 64 * 1024
    rate_limit: RateBudget | None = RateBudget(600, 60)
    auth_failure_limit: RateBudget | None = RateBudget(30, 60)
    # A running Idempotency-Key request renews its claim for this long (every third of it); a claim
    # not renewed in time was left by a process that died, and a retry takes it over.
    idempotency_lease_seconds: float = 10.0
    # Audit entries older than this are swept (SPACESVC_AUDIT_RETENTION).
    audit_retention_seconds: float = 365 * 86400.0
    # An idle keep-alive connection is closed after this long.
    keepalive_timeout: float = 75.0
    # Where rate budgets are kept: "memory" (each process its own) or a redis:// URL (shared).
    rate_limit_storage: str = field(default="memory", repr=False)
    # On SIGTERM: readiness off, serve this long while load balancers notice, then stop accepting
    # and give in-flight requests up to shutdown_timeout.
    shutdown_delay: float = 5.0
    shutdown_timeout: float = 30.0
    # GET /metrics (Prometheus text format); SPACESVC_METRICS=off removes the route.
    metrics: bool = True
    # How long a credential_process answer says its key may be used (SPACESVC_CREDENTIAL_TTL).
    credential_ttl_seconds: float = 3600.0
    # Endpoints the service may connect to besides the ones it always refuses (host names and
    # CIDRs; empty: any other address), SPACESVC_OUTBOUND_ALLOW.
    outbound_allow: tuple[str, ...] = ()
    # Where the key issuers are reached (docs/keys.md): never taken from an API client.
    digitalocean_api_url: str = DEFAULT_DIGITALOCEAN_API_URL
    iam_endpoint: str = DEFAULT_IAM_ENDPOINT
    # The start of the name of every key spacesvc mints; keys without it are never touched.
    key_prefix: str = DEFAULT_KEY_PREFIX
    # A minted key older than this is rotated (SPACESVC_KEY_MAX_AGE; None: never by age).
    key_max_age_seconds: float | None = None
    # How long a rotated-out key keeps working at most (SPACESVC_KEY_OVERLAP).
    key_overlap_seconds: float = 3600.0
    # Set once the embedded PostgreSQL (SPACESVC_DATABASE_URL unset) has been started for us.
    embedded: bool = False
    # Where that embedded PostgreSQL keeps its cluster (said in serve's first line).
    embedded_pgdata: Path | None = None

    @property
    def secret_backend(self) -> str:
        """The name of the selected secret backend (SPACESVC_SECRET_BACKEND)."""
        return backends.backend_for(self.secrets).name

    def with_changes(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        database_url = _get(env, "SPACESVC_DATABASE_URL")
        if database_url is not None and not database_url.startswith(("postgres://", "postgresql://")):
            raise ConfigError("SPACESVC_DATABASE_URL must be a PostgreSQL URL (postgresql://user:pass@host:port/db)")
        backend = backends.backend_class(_get(env, "SPACESVC_SECRET_BACKEND") or DEFAULT_SECRET_BACKEND)
        secrets = backend.settings_class.from_env(env, embedded=database_url is None)
        rate_limit = RateBudget.from_env(env, "SPACESVC_RATE_LIMIT", default=cls.rate_limit)
        auth_failure_limit = RateBudget.from_env(env, "SPACESVC_AUTH_FAILURE_LIMIT", default=cls.auth_failure_limit)
        log_level = (_get(env, "SPACESVC_LOG_LEVEL") or cls.log_level).upper()
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError("SPACESVC_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR")
        keepalive_timeout = parse_seconds(env, "SPACESVC_KEEPALIVE_TIMEOUT", default=cls.keepalive_timeout)
        audit_retention = parse_seconds(env, "SPACESVC_AUDIT_RETENTION", default=cls.audit_retention_seconds)
        storage = _get(env, "SPACESVC_RATE_LIMIT_STORAGE") or cls.rate_limit_storage
        if storage != "memory":
            check_redis_url(storage)
        credential_ttl = parse_seconds(env, "SPACESVC_CREDENTIAL_TTL", default=cls.credential_ttl_seconds)
        if credential_ttl < 1:
            raise ConfigError("SPACESVC_CREDENTIAL_TTL must be at least 1s (e.g. 1h)")
        metrics = (_get(env, "SPACESVC_METRICS") or "on").lower()
        if metrics not in {"on", "off"}:
            raise ConfigError("SPACESVC_METRICS must be on or off")
        return cls(
            database_url=database_url,
            data_dir=Path(_get(env, "SPACESVC_DATA_DIR") or cls.data_dir),
            secrets=secrets,
            log_level=log_level,
            rate_limit=rate_limit,
            auth_failure_limit=auth_failure_limit,
            keepalive_timeout=keepalive_timeout,
            audit_retention_seconds=audit_retention,
            rate_limit_storage=storage,
            shutdown_delay=parse_seconds(env, "SPACESVC_SHUTDOWN_DELAY", default=cls.shutdown_delay),
            shutdown_timeout=parse_seconds(env, "SPACESVC_SHUTDOWN_TIMEOUT", default=cls.shutdown_timeout),
            metrics=metrics == "on",
            credential_ttl_seconds=credential_ttl,
            outbound_allow=parse_outbound_allow(_get(env, "SPACESVC_OUTBOUND_ALLOW")),
            digitalocean_api_url=parse_base_url(env, "SPACESVC_DIGITALOCEAN_API_URL", cls.digitalocean_api_url),
            iam_endpoint=parse_base_url(env, "SPACESVC_IAM_ENDPOINT", cls.iam_endpoint),
            key_prefix=parse_key_prefix(_get(env, "SPACESVC_KEY_PREFIX") or cls.key_prefix),
            key_max_age_seconds=parse_key_max_age(env),
            key_overlap_seconds=parse_seconds(env, "SPACESVC_KEY_OVERLAP", default=cls.key_overlap_seconds),
        )


HOST_NAME = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?$")
DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def ascii_number(text: str) -> bool:
    """A whole number in ASCII digits (str.isdigit also takes "²" and other digits int() refuses)."""
    return text.isascii() and text.isdigit()


def parse_outbound_allow(text: str | None) -> tuple[str, ...]:
    """SPACESVC_OUTBOUND_ALLOW: comma-separated host names and CIDRs (e.g. minio.internal,10.0.0.0/8)."""
    entries = tuple(entry.strip() for entry in (text or "").split(",") if entry.strip())
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            if not HOST_NAME.match(entry):
                raise ConfigError(
                    f"SPACESVC_OUTBOUND_ALLOW: {entry!r} is neither a host name nor a CIDR (e.g. 10.0.0.0/8)"
                ) from None
    return entries


def parse_base_url(env: Mapping[str, str], variable: str, default: str) -> str:
    """An http(s) URL of a service's root (no query, no credentials), without a trailing slash."""
    text = _get(env, variable)
    if text is None:
        return default
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ConfigError(f"{variable} must be an http(s) URL such as {default}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"{variable} must be an http(s) URL such as {default}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{variable} must not hold credentials (not shown)")
    return text.rstrip("/")


def parse_key_prefix(text: str) -> str:
    """SPACESVC_KEY_PREFIX: 1 to 32 of A-Z a-z 0-9 + = , . @ _ - (what key and IAM user names accept)."""
    if not KEY_PREFIX.match(text):
        raise ConfigError(
            f"SPACESVC_KEY_PREFIX={text!r} must be 1 to 32 letters, digits or + = , . @ _ - "
            f"(default {DEFAULT_KEY_PREFIX})"
        )
    return text


SETTINGS: web.AppKey[Settings] = web.AppKey("settings")


def check_redis_url(url: str) -> None:
    """Raise ConfigError unless ``url`` is a usable redis:// URL; never repeats it (it may hold a password)."""
    problem = "SPACESVC_RATE_LIMIT_STORAGE must be memory or a redis:// (or rediss://) URL, e.g. redis://redis:6379/0"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ConfigError(f"{problem}; the value is not a valid URL (not shown: it may hold a password)") from None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ConfigError(problem)
    database = parts.path.strip("/")
    if database and not ascii_number(database):
        raise ConfigError(f"{problem}; the path must be a database number")


def parse_key_max_age(env: Mapping[str, str]) -> float | None:
    """SPACESVC_KEY_MAX_AGE: a duration of at least a minute, or unset / ``off`` (never by age)."""
    if (_get(env, "SPACESVC_KEY_MAX_AGE") or "off").lower() == "off":
        return None
    seconds = parse_seconds(env, "SPACESVC_KEY_MAX_AGE", default=0.0)
    if seconds < 60:
        raise ConfigError("SPACESVC_KEY_MAX_AGE must be at least 1m (or off)")
    return seconds


def parse_seconds(env: Mapping[str, str], variable: str, *, default: float) -> float:
    """A duration such as ``75s``, ``500ms``, ``5m``, ``12h``, ``30d`` (a bare number is seconds)."""
    text = _get(env, variable)
    if text is None:
        return default
    match = DURATION.match(text)
    if match is None:
        raise ConfigError(f"{variable}={text!r} must be a duration such as 75s, 500ms, 5m or 1h")
    return float(match[1]) * DURATION_SECONDS[match[2] or "s"]


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None
