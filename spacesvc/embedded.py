"""The embedded default: a private PostgreSQL (pgserver) and a generated key file in the data dir.

Used when SPACESVC_DATABASE_URL is unset, so ``spacesvc serve`` works on a fresh machine.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from spacesvc.settings import ConfigError, EncryptionKey, Settings, new_encryption_key, parse_encryption_keys

log = logging.getLogger("spacesvc.embedded")

KEY_FILE = "encryption-keys"


def resolve(settings: Settings) -> Settings:
    """Settings with a database URL and encryption keys, starting what the embedded default needs."""
    if settings.database_url is not None:
        return settings
    data_dir = settings.data_dir.resolve()
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"SPACESVC_DATA_DIR={settings.data_dir}: cannot create it ({error.strerror})") from None
    resolved = settings.with_changes(database_url=start_postgres(data_dir / "pg"), embedded=True)
    return with_db_keys(resolved) if settings.secret_backend == "db" else resolved


def with_db_keys(settings: Settings) -> Settings:
    """Settings the db backend can work with: the configured keys, else the data dir's key file."""
    if settings.encryption_keys:
        return settings
    if not settings.embedded:
        raise ConfigError("SPACESVC_ENCRYPTION_KEYS is required for the db secret backend with an external database")
    return settings.with_changes(encryption_keys=load_or_create_key_file(settings.data_dir.resolve() / KEY_FILE))


def start_postgres(pgdata: Path) -> str:
    """Start (or join) the private PostgreSQL server in ``pgdata``; returns its URL.

    The server stops when the last spacesvc process using it exits.
    """
    with warnings.catch_warnings():
        # pgserver's platformdirs warns when XDG_RUNTIME_DIR is unset; it then uses /tmp, which is fine
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pgserver  # imported here: only the embedded default needs it

    fresh = not (pgdata / "PG_VERSION").exists()
    if fresh:
        log.info("initialising an embedded PostgreSQL in %s", pgdata)
    try:
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
    except Exception as error:  # pgserver raises bare subprocess errors; name the place instead
        raise ConfigError(
            f"SPACESVC_DATA_DIR: the embedded PostgreSQL in {pgdata} did not start "
            f"({type(error).__name__}); see {pgdata / 'log'}"
        ) from None
    return str(server.get_uri())


def load_or_create_key_file(path: Path) -> tuple[EncryptionKey, ...]:
    """The db backend's keyring from the data dir, generated (mode 0600) on first use."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(new_encryption_key("k1") + "\n")
        log.warning(
            "generated an encryption key file at %s (mode 0600); in production set "
            "SPACESVC_ENCRYPTION_KEYS and keep the key outside the data directory",
            path,
        )
    return parse_encryption_keys(path.read_text().strip(), variable=f"key file {path}")
