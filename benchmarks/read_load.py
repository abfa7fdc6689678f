"""Read throughput under load: `wrk` against GET /api/settings/spaces (auth + config, two
queries) next to GET /healthz (no dependency) as the baseline, in one run, on this machine.

Starts its own PostgreSQL and `spacesvc serve` (one process, the db backend) and runs wrk
(Debian package `wrk`) for a few seconds per route. Prints figures; asserts nothing.

    .venv/bin/python -m benchmarks.read_load [--seconds 10] [--connections 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import asyncpg
import psutil
import requests

from benchmarks import print_table, service_env, spacesvc_serve, start
from spacesvc.audit.model import Actor
from spacesvc.environments import queries as environments
from spacesvc.migrate import migrate
from spacesvc.tokens.model import ADMIN_SCOPES, CREDENTIALS_SCOPE
from spacesvc.tokens.queries import create_token
from tests.support.postgres import LocalPostgres, free_port

LUA = """
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
"""


BENCHMARK = Actor("benchmark")


async def prepare(url: str, environment: str | None = None) -> str:
    """Migrate, and make a token: an admin's, or (``environment``) a workload's bound to it."""
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        if environment is None:
            token, _ = await create_token(conn, name="bench", role="admin", scopes=list(ADMIN_SCOPES), actor=BENCHMARK)
        else:
            token, _ = await create_token(
                conn,
                name="bench-workload",
                role="viewer",
                scopes=[CREDENTIALS_SCOPE],
                environment=await environments.find(conn, environment),
                actor=BENCHMARK,
            )
    finally:
        await conn.close()
    return token


def _figure(pattern: str, report: str) -> str:
    """One figure from wrk's report; a report without it is a failed run."""
    match = re.search(pattern, report)
    if match is None:
        raise RuntimeError(f"wrk's report has no {pattern!r}:\n{report}")
    return match[1]


def wrk(url: str, seconds: int, connections: int, script: Path, token: str) -> dict[str, str]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        env={**os.environ, "BENCH_TOKEN": token},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    figures = {"req/s": _figure(r"Requests/sec:\s+([\d.]+)", out)}
    for percentile in ("50%", "99%"):
        figures[f"p{percentile[:-1]}"] = _figure(rf"\s{percentile}\s+(\S+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    figures["non-2xx"] = errors[1] if errors else "0"
    return figures


def main(seconds: int, connections: int) -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as workdir:
        pg = LocalPostgres.create(Path(workdir) / "pg")
        pg.start()
        server = None
        try:
            token = asyncio.run(prepare(pg.url))
            port = free_port()
            env = service_env(pg.url, SPACESVC_RATE_LIMIT="off", SPACESVC_LOG_LEVEL="WARNING")
            base = f"http://127.0.0.1:{port}"
            server = start(spacesvc_serve(port), env, f"{base}/healthz")
            headers = {"Authorization": f"Bearer {token}"}
            body = {"accessKey": "BENCHKEY", "secretKey": secrets.token_urlsafe(30), "buckets": ["backups"]}
            requests.put(f"{base}/api/settings/spaces", json=body, headers=headers, timeout=5).raise_for_status()
            script = Path(workdir) / "auth.lua"
            script.write_text(LUA)
            process = psutil.Process(server.pid)
            idle_rss = process.memory_info().rss
            rows = {
                "GET /healthz (baseline)": wrk(f"{base}/healthz", seconds, connections, script, token),
                "GET /api/settings/spaces": wrk(f"{base}/api/settings/spaces", seconds, connections, script, token),
            }
            loaded_rss = process.memory_info().rss
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=10)
            pg.destroy()
    print_table(
        f"wrk, {connections} connections, {seconds}s per route, one spacesvc process, 2 cores shared with PostgreSQL:",
        "route",
        rows,
    )
    print(f"spacesvc resident memory: {idle_rss / 2**20:.1f} MiB idle, {loaded_rss / 2**20:.1f} MiB after the load")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    main(args.seconds, args.connections)
