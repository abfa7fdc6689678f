"""The fleet figures (README.md): what the metrics cost a read, and what `--workers 2` serves
against one process, side by side in one run (wrk, authenticated GET /api/settings/spaces, access log at
INFO into a file, rate limits on with a budget the load never spends).

Three services on one PostgreSQL: one process with metrics (the default), one process with
``SPACESVC_METRICS=off``, and ``--workers 2`` with metrics. Rows alternate round by round; each
figure is the median over the rounds. On a 2-core machine wrk shares the cores with the workers.

    .venv/bin/python -m benchmarks.fleet [--seconds 6] [--connections 64] [--rounds 3]
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

from benchmarks import print_table, service_env, spacesvc_serve, start, wrk_rounds_options
from benchmarks.hot_path import AUTH, median_figures
from benchmarks.read_load import prepare, wrk
from tests.support.postgres import LocalPostgres, free_port

SPACES = "/api/settings/spaces"
SERVICES = {
    "1 process, metrics on": ([], {}),
    "1 process, metrics off": ([], {"SPACESVC_METRICS": "off"}),
    "--workers 2, metrics on": (["--workers", "2"], {}),
}


def main(seconds: int, connections: int, rounds: int) -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as workdir:
        scripts = Path(workdir)
        (scripts / "auth.lua").write_text(AUTH)
        pg = LocalPostgres.create(scripts / "pg")
        pg.start()
        processes: list[subprocess.Popen[bytes]] = []
        try:
            token = asyncio.run(prepare(pg.url))
            base = service_env(
                pg.url, SPACESVC_RATE_LIMIT="100000000/60", SPACESVC_LOG_LEVEL="INFO", SPACESVC_SHUTDOWN_DELAY="0s"
            )
            urls: dict[str, str] = {}
            for name, (arguments, variables) in SERVICES.items():
                port = free_port()
                command = spacesvc_serve(port, *arguments)
                log = scripts / f"{len(urls)}.log"
                processes.append(start(command, {**base, **variables}, f"http://127.0.0.1:{port}/healthz", log))
                urls[name] = f"http://127.0.0.1:{port}{SPACES}"
            body = {"accessKey": "BENCHKEY", "secretKey": "s" * 40, "buckets": ["backups"]}
            requests.put(next(iter(urls.values())), json=body, headers={"Authorization": f"Bearer {token}"}, timeout=5)
            measured: dict[str, list[dict[str, str]]] = {name: [] for name in urls}
            for _ in range(rounds):
                for name, url in urls.items():
                    measured[name].append(wrk(url, seconds, connections, scripts / "auth.lua", token))
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=30)
            pg.destroy()
    rows = {name: median_figures(figures) for name, figures in measured.items()}
    one = float(rows["1 process, metrics on"]["req/s"])
    for figures in rows.values():
        figures["vs 1 proc"] = f"{float(figures['req/s']) / one:.2f}x"
    print_table(
        f"wrk, {connections} connections, {seconds}s per row, medians of {rounds} alternating rounds, 2 shared cores:",
        "service",
        rows,
    )


if __name__ == "__main__":
    options = wrk_rounds_options(seconds=6)
    main(options.seconds, options.connections, options.rounds)
