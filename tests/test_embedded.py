"""The embedded default: `spacesvc serve` with no SPACESVC_DATABASE_URL, as a new user runs it."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp

from spacesvc.embedded import bundled_major_version
from tests.support.cli import clean_env, run
from tests.support.postgres import LocalPostgres, embedded_bin_dir, find_bin_dir, free_port
from tests.support.secrecy import assert_hidden
from tests.support.service import Serve

TOKEN_LINE = re.compile(r"^sps_[A-Za-z0-9_-]{43,}$")


async def test_serve_on_a_fresh_machine_starts_postgres_prints_url_and_first_token_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()

    first = Serve(clean_env(SPACESVC_DATA_DIR=str(data_dir)), port)
    try:
        assert f"http://127.0.0.1:{port}" in first.stdout[0]
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


def test_a_data_dir_of_another_postgresql_major_version_is_refused_and_left_untouched(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
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
