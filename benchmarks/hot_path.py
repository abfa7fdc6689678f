"""The README's hot-path table, side by side in one run: spacesvc's reads and writes against the
framework's limit (a canned aiohttp + uvloop handler) and a naive aiohttp + asyncpg handler, with wrk.

Starts its own PostgreSQL, one `spacesvc serve` as in production (db backend, access log at INFO
into a file, rate limits on with a budget the load never spends, so the limiter runs) and the two
baselines (benchmarks/baselines.py) on this machine. Reads are authenticated GETs of the
configuration, 304s for a current If-None-Match, and credential deliveries (each audited); writes
are PUTs that change the access key every time. Every row runs once per round, rounds alternate,
and each figure is the median over the rounds. Prints figures, ratios and spacesvc's resident
memory after the load; asserts nothing.

    .venv/bin/python -m benchmarks.hot_path [--seconds 8] [--connections 64] [--rounds 3]
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

from benchmarks import print_table, resident_mb, service_env, spacesvc_serve, start, wrk_rounds_options
from benchmarks.read_load import prepare, wrk
from tests.support.postgres import LocalPostgres, free_port

AUTH = 'wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")\n'
NOT_MODIFIED = AUTH + 'wrk.headers["If-None-Match"] = os.getenv("BENCH_ETAG")\n'
PUT = (
    AUTH
    + 'wrk.headers["Content-Type"] = "application/json"\n'
    + "counter = 0\n"
    + "request = function()\n"
    + "  counter = counter + 1\n"
    + '  return wrk.format("PUT", nil, nil, \'{"accessKey": "K\' .. counter .. \'", "buckets": ["backups"]}\')\n'
    + "end\n"
)


def median_figures(rounds: list[dict[str, str]]) -> dict[str, str]:
    """The median of each figure over the rounds (latencies as wrk prints them: 1.2ms, 850us)."""
    figures = {}
    for name in rounds[0]:
        values = [float(r[name]) if name != "p50" and name != "p99" else _ms(r[name]) for r in rounds]
        middle = statistics.median(values)
        figures[name] = f"{middle:.0f}" if name in ("req/s", "non-2xx") else f"{middle:.2f}ms"
    return figures


def _ms(text: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    raise ValueError(text)


def main(seconds: int, connections: int, rounds: int) -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    python = sys.executable
    with tempfile.TemporaryDirectory() as workdir:
        scripts = Path(workdir)
        for name, text in (("auth.lua", AUTH), ("etag.lua", NOT_MODIFIED), ("put.lua", PUT)):
            (scripts / name).write_text(text)
        pg = LocalPostgres.create(scripts / "pg")
        pg.start()
        processes: list[subprocess.Popen[bytes]] = []
        try:
            token = asyncio.run(prepare(pg.url))
            env = service_env(pg.url, SPACESVC_RATE_LIMIT="100000000/60", SPACESVC_LOG_LEVEL="INFO")
            ports = {name: free_port() for name in ("spacesvc", "canned", "naive")}
            urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
            spacesvc = spacesvc_serve(ports["spacesvc"])
            processes.append(start(spacesvc, env, f"{urls['spacesvc']}/healthz", scripts / "spacesvc.log"))
            headers = {"Authorization": f"Bearer {token}"}
            body = {"accessKey": "BENCHKEY", "secretKey": secrets.token_urlsafe(30), "buckets": ["backups"]}
            requests.put(f"{urls['spacesvc']}/api/settings/spaces", json=body, headers=headers, timeout=5)
            environment = requests.post(
                f"{urls['spacesvc']}/api/environments", json={"name": "bench"}, headers=headers, timeout=5
            ).json()["environment"]["id"]
            requests.put(
                f"{urls['spacesvc']}/api/settings/spaces/environments/{environment}",
                json={"enabled": True},
                headers=headers,
                timeout=5,
            )
            workload = asyncio.run(prepare(pg.url, environment=environment))
            for name in ("canned", "naive"):
                command = [python, "-m", "benchmarks.baselines", name, "--port", str(ports[name])]
                processes.append(start([*command, "--database-url", pg.url], env, f"{urls[name]}/api/settings/spaces"))
            etag = requests.get(f"{urls['spacesvc']}/api/settings/spaces", headers=headers, timeout=5).headers["ETag"]
            os.environ["BENCH_ETAG"] = etag
            spaces = "/api/settings/spaces"
            credentials = f"/api/environments/{environment}/spaces/credentials"

            def load(url: str, script: str, as_token: str = token) -> dict[str, str]:
                return wrk(url, seconds, connections, scripts / script, as_token)

            plan = {
                "canned aiohttp + uvloop GET": (f"{urls['canned']}{spaces}", "auth.lua", token),
                "spacesvc GET (authenticated)": (f"{urls['spacesvc']}{spaces}", "auth.lua", token),
                "spacesvc GET -> 304": (f"{urls['spacesvc']}{spaces}", "etag.lua", token),
                "spacesvc credentials (db)": (f"{urls['spacesvc']}{credentials}", "auth.lua", workload),
                "naive asyncpg PUT (UPDATE)": (f"{urls['naive']}{spaces}", "put.lua", token),
                "spacesvc PUT (db, no new secret)": (f"{urls['spacesvc']}{spaces}", "put.lua", token),
            }
            measured: dict[str, list[dict[str, str]]] = {name: [] for name in plan}
            for _ in range(rounds):
                for name, (url, script, as_token) in plan.items():
                    measured[name].append(load(url, script, as_token))
            rows = {name: median_figures(figures) for name, figures in measured.items()}
            resident = resident_mb(processes[0].pid)
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=10)
            pg.destroy()
    canned = float(rows["canned aiohttp + uvloop GET"]["req/s"])
    naive = float(rows["naive asyncpg PUT (UPDATE)"]["req/s"])
    for name, figures in rows.items():
        base = naive if "PUT" in name else canned
        figures["ratio"] = f"{float(figures['req/s']) / base:.2f}x"
    print_table(
        f"wrk, {connections} connections, {seconds}s per row, medians of {rounds} alternating rounds, "
        "one process each, 2 shared cores:",
        "row",
        rows,
    )
    print("ratio: reads against the canned GET, writes against the naive PUT, in this run")
    print(f"spacesvc resident memory after the load: {resident:.0f} MB")


if __name__ == "__main__":
    options = wrk_rounds_options()
    main(options.seconds, options.connections, options.rounds)
