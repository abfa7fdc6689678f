"""spacesvc against the system a user could read the secret from directly: OpenBao's own KV v2,
doing the same work per request (authenticate a token, find the secret, write an audit record,
answer JSON), and against the framework's limit, side by side in one run.

Starts its own PostgreSQL; an OpenBao server (raft storage, initialized and unsealed, a file
audit device declared in its configuration as OpenBao 2.x requires, KV v2 at ``secret/``); two
`spacesvc serve` processes, one per secret backend (``db`` and ``vault``, each on a database of
its own, rate limits off, access log at INFO into a file as in production); and a canned
aiohttp + uvloop handler (benchmarks/baselines.py). wrk drives each row; rows run once per round,
rounds alternate, and each figure is the median over the rounds. Ratios compare rows measured
in this run only:

- reads: spacesvc's credential deliveries against OpenBao's KV v2 read with a token whose policy
  reads that path (audited by both);
- writes: spacesvc's PUT with a new secret (``vault`` backend) against OpenBao's KV v2 write;
- the framework: spacesvc's GET and 304 against the canned handler.

Prints figures, ratios and spacesvc's resident memory after the load; asserts nothing.

    .venv/bin/python -m benchmarks.versus_openbao [--seconds 8] [--connections 64] [--rounds 3]
        [--rows get,304,canned]

``--rows`` runs only the rows named (short names in ``ROWS``); a ratio whose baseline row was not
run is left out. By default every row runs.
"""

from __future__ import annotations

import asyncio
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import requests

from benchmarks import print_table, resident_mb, service_env, spacesvc_serve, start, wrk_rounds_options
from benchmarks.hot_path import median_figures
from benchmarks.read_load import prepare, wrk
from tests.support.database import database_url_for
from tests.support.openbao import OpenBao
from tests.support.postgres import LocalPostgres, free_port

SPACESVC_AUTH = 'wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")\n'
SPACESVC_ETAG = SPACESVC_AUTH + 'wrk.headers["If-None-Match"] = os.getenv("BENCH_ETAG")\n'
SPACESVC_PUT_NEW_SECRET = (
    SPACESVC_AUTH
    + """wrk.headers["Content-Type"] = "application/json"
counter = 0
request = function()
  counter = counter + 1
  local body = '{"accessKey": "BENCHKEY", "secretKey": "bench-secret-' .. counter .. '", "buckets": ["backups"]}'
  return wrk.format("PUT", nil, nil, body)
end
"""
)
BAO_AUTH = 'wrk.headers["X-Vault-Token"] = os.getenv("BENCH_TOKEN")\n'
BAO_WRITE = (
    BAO_AUTH
    + """wrk.headers["Content-Type"] = "application/json"
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", nil, nil, '{"data": {"secretKey": "bench-secret-' .. counter .. '"}}')
end
"""
)
SCRIPTS = {
    "spacesvc.lua": SPACESVC_AUTH,
    "etag.lua": SPACESVC_ETAG,
    "put.lua": SPACESVC_PUT_NEW_SECRET,
    "bao.lua": BAO_AUTH,
    "bao-write.lua": BAO_WRITE,
}
# The least a direct reader or writer of the secret needs, as a workload would be given.
BAO_POLICY = """
path "secret/data/direct/*" { capabilities = ["create", "read", "update"] }
"""
SPACESVC_POLICY = """
path "secret/data/spacesvc/spaces" { capabilities = ["create", "read", "update"] }
path "secret/metadata/spacesvc/spaces" { capabilities = ["read", "update", "delete"] }
"""


# The rows, by the short name --rows takes, in the order they run.
ROWS = {
    "bao-read": "OpenBao KV v2 read (audited)",
    "credentials-db": "spacesvc credentials, db",
    "credentials-vault": "spacesvc credentials, vault",
    "bao-write": "OpenBao KV v2 write (audited)",
    "put-vault": "spacesvc PUT new secret, vault",
    "canned": "canned aiohttp + uvloop GET",
    "get": "spacesvc GET",
    "304": "spacesvc GET -> 304",
}


async def _create_database(admin_url: str, name: str) -> str:
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return database_url_for(admin_url, name)


def _configure(base: str, token: str) -> tuple[str, str]:
    """Store a configuration, enable an environment for it; its id and the configuration's ETag."""
    headers = {"Authorization": f"Bearer {token}"}
    body = {"accessKey": "BENCHKEY", "secretKey": secrets.token_urlsafe(30), "buckets": ["backups"]}
    requests.put(f"{base}/api/settings/spaces", json=body, headers=headers, timeout=10).raise_for_status()
    created = requests.post(f"{base}/api/environments", json={"name": "bench"}, headers=headers, timeout=10)
    environment = str(created.json()["environment"]["id"])
    requests.put(
        f"{base}/api/settings/spaces/environments/{environment}", json={"enabled": True}, headers=headers, timeout=10
    ).raise_for_status()
    etag = requests.get(f"{base}/api/settings/spaces", headers=headers, timeout=10).headers["ETag"]
    return environment, etag


def main(seconds: int, connections: int, rounds: int, only: Sequence[str] = tuple(ROWS)) -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as workdir:
        scripts = Path(workdir)
        for name, text in SCRIPTS.items():
            (scripts / name).write_text(text)
        pg = LocalPostgres.create(scripts / "pg")
        pg.start()
        (scripts / "bao").mkdir()
        bao = OpenBao.persistent(scripts / "bao", audit_file=scripts / "bao" / "audit.log")
        processes: list[subprocess.Popen[bytes]] = []
        try:
            bao.initialize()
            bao.write_policy("direct", BAO_POLICY)
            bao.write_policy("spacesvc", SPACESVC_POLICY)
            direct_token = bao.create_token(["direct"], ttl="2h")
            bao.admin().secrets.kv.v2.create_or_update_secret(
                path="direct/spaces", secret={"secretKey": secrets.token_urlsafe(30)}
            )
            urls: dict[str, str] = {}
            tokens: dict[str, str] = {}
            for backend in ("db", "vault"):
                database = asyncio.run(_create_database(pg.url, f"bench_{backend}"))
                tokens[backend] = asyncio.run(prepare(database))
                variables = {"SPACESVC_RATE_LIMIT": "off", "SPACESVC_LOG_LEVEL": "INFO"}
                if backend == "vault":
                    variables |= {
                        "SPACESVC_SECRET_BACKEND": "vault",
                        "VAULT_ADDR": bao.addr,
                        "VAULT_TOKEN": bao.create_token(["spacesvc"], ttl="2h"),
                    }
                port = free_port()
                urls[backend] = f"http://127.0.0.1:{port}"
                env = service_env(database, **variables)
                log = scripts / f"{backend}.log"
                processes.append(start(spacesvc_serve(port), env, f"{urls[backend]}/healthz", log))
                environment, etag = _configure(urls[backend], tokens[backend])
                tokens[f"{backend}-workload"] = asyncio.run(prepare(database, environment=environment))
                urls[f"{backend}-credentials"] = f"{urls[backend]}/api/environments/{environment}/spaces/credentials"
                os.environ["BENCH_ETAG"] = etag
            canned_port = free_port()
            canned = f"http://127.0.0.1:{canned_port}/api/settings/spaces"
            command = [sys.executable, "-m", "benchmarks.baselines", "canned", "--port", str(canned_port)]
            processes.append(start([*command, "--database-url", pg.url], dict(os.environ), canned))

            spaces = "/api/settings/spaces"
            kv = f"{bao.addr}/v1/secret/data/direct"
            plan = {
                "OpenBao KV v2 read (audited)": (f"{kv}/spaces", "bao.lua", direct_token),
                "spacesvc credentials, db": (urls["db-credentials"], "spacesvc.lua", tokens["db-workload"]),
                "spacesvc credentials, vault": (urls["vault-credentials"], "spacesvc.lua", tokens["vault-workload"]),
                "OpenBao KV v2 write (audited)": (f"{kv}/new", "bao-write.lua", direct_token),
                "spacesvc PUT new secret, vault": (f"{urls['vault']}{spaces}", "put.lua", tokens["vault"]),
                "canned aiohttp + uvloop GET": (canned, "spacesvc.lua", tokens["db"]),
                "spacesvc GET": (f"{urls['db']}{spaces}", "spacesvc.lua", tokens["db"]),
                "spacesvc GET -> 304": (f"{urls['db']}{spaces}", "etag.lua", tokens["db"]),
            }
            chosen = {ROWS[short] for short in only}
            plan = {name: row for name, row in plan.items() if name in chosen}
            measured: dict[str, list[dict[str, str]]] = {name: [] for name in plan}
            for _ in range(rounds):
                for name, (url, script, token) in plan.items():
                    measured[name].append(wrk(url, seconds, connections, scripts / script, token))
            rows = {name: median_figures(figures) for name, figures in measured.items()}
            resident = {"db": resident_mb(processes[0].pid), "vault": resident_mb(processes[1].pid)}
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=30)
            bao.stop()
            pg.destroy()
    baselines = {
        "OpenBao KV v2 read (audited)": "OpenBao KV v2 read (audited)",
        "spacesvc credentials, db": "OpenBao KV v2 read (audited)",
        "spacesvc credentials, vault": "OpenBao KV v2 read (audited)",
        "OpenBao KV v2 write (audited)": "OpenBao KV v2 write (audited)",
        "spacesvc PUT new secret, vault": "OpenBao KV v2 write (audited)",
        "canned aiohttp + uvloop GET": "canned aiohttp + uvloop GET",
        "spacesvc GET": "canned aiohttp + uvloop GET",
        "spacesvc GET -> 304": "canned aiohttp + uvloop GET",
    }
    for name, figures in rows.items():
        baseline = rows.get(baselines[name])
        figures["ratio"] = f"{float(figures['req/s']) / float(baseline['req/s']):.2f}x" if baseline else "-"
        figures["against"] = "-" if baselines[name] == name else baselines[name].split(" ")[0]
    print_table(
        f"wrk, {connections} connections, {seconds}s per row, medians of {rounds} alternating rounds, "
        f"one process each, {os.cpu_count()} shared cores ({platform.machine()}, {platform.python_version()}):",
        "row",
        rows,
    )
    print("ratio: against the row named in 'against', measured in this run")
    print(f"spacesvc resident memory after the load: db {resident['db']:.0f} MB, vault {resident['vault']:.0f} MB")


if __name__ == "__main__":
    options = wrk_rounds_options(rows=tuple(ROWS))
    main(options.seconds, options.connections, options.rounds, options.rows)
