"""Median latency of PUT /api/settings/spaces (a write that changes the secret) and of GET, for the
db backend (the baseline) and the vault backend, measured in one run on this machine.

Starts its own PostgreSQL and OpenBao dev server (as the tests do) and the app in-process on a
real socket. Prints figures; asserts nothing.

    .venv/bin/python -m benchmarks.write_latency [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp import web

from backends.db import DbSettings, EncryptionKey
from backends.vault import VaultSettings
from benchmarks import print_table
from spacesvc.app import create_app
from spacesvc.audit.model import Actor
from spacesvc.migrate import migrate
from spacesvc.settings import Settings
from spacesvc.tokens.model import ADMIN_SCOPES
from spacesvc.tokens.queries import create_token
from tests.support.openbao import OpenBao
from tests.support.postgres import LocalPostgres, free_port

SPACES = "/api/settings/spaces"


BENCHMARK = Actor("benchmark")


async def measure(settings: Settings, requests: int) -> dict[str, float]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("DELETE FROM spaces_config; DELETE FROM secret_ciphertexts")
        token, _ = await create_token(
            conn, name=f"bench-{time.time_ns()}", role="admin", scopes=list(ADMIN_SCOPES), actor=BENCHMARK
        )
    finally:
        await conn.close()
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}{SPACES}"
    headers = {"Authorization": f"Bearer {token}"}
    body = {"accessKey": "BENCHKEY", "region": "ams3", "buckets": ["backups"]}
    timings: dict[str, list[float]] = {"put": [], "get": []}
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            for i in range(requests + 20):  # the first 20 warm up pools and caches
                started = time.perf_counter()
                async with http.put(url, json={**body, "secretKey": secrets.token_urlsafe(30)}) as resp:
                    assert resp.status in (200, 201), await resp.text()
                put = time.perf_counter() - started
                started = time.perf_counter()
                async with http.get(url) as resp:
                    assert resp.status == 200
                get = time.perf_counter() - started
                if i >= 20:
                    timings["put"].append(put)
                    timings["get"].append(get)
    finally:
        await runner.cleanup()
    return {
        f"{name} {stat}": value * 1000
        for name, values in timings.items()
        for stat, value in (("median", statistics.median(values)), ("p95", statistics.quantiles(values, n=20)[-1]))
    }


async def main(requests: int) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        pg = LocalPostgres.create(Path(workdir) / "pg")
        pg.start()
        bao = OpenBao.dev_server(Path(workdir))
        try:
            conn = await asyncpg.connect(pg.url)
            await migrate(conn)
            await conn.close()
            base = Settings(database_url=pg.url, secrets=DbSettings((EncryptionKey("k1", os.urandom(32)),)))
            vault = base.with_changes(secrets=VaultSettings(addr=bao.addr, token=bao.root_token))
            results = {"db (baseline)": await measure(base, requests), "vault": await measure(vault, requests)}
        finally:
            bao.stop()
            pg.destroy()
    print_table(
        f"{requests} sequential PUT (new secret each) + GET pairs per backend, milliseconds:", "backend", results
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    asyncio.run(main(parser.parse_args().requests))
