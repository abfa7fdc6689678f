"""The watcher target (README.md, Benchmarks): 10,000 concurrent watches (``Prefer: wait=60``
with the current ``If-None-Match``) held by one `spacesvc serve` process, then one write: how long until every
watcher has its 200, and the process's resident memory while they are held and after.

Starts its own PostgreSQL and one `spacesvc serve` (db backend, access log at INFO into a file).
The watchers are raw asyncio connections in this process (uvloop), one request each; a watcher's
latency is from the write's answer to the first line of its own answer. As a baseline in the same
run, the same connections then send one plain GET each at once: how long until all are answered
is what answering that many requests costs here at all.

    .venv/bin/python -m benchmarks.watchers [--watchers 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import tempfile
import time
from pathlib import Path

import requests
import uvloop

from benchmarks import resident_mb, service_env, spacesvc_serve, start
from benchmarks.read_load import prepare
from tests.support.postgres import LocalPostgres, free_port

SPACES = "/api/settings/spaces"


async def open_held(port: int, request: bytes, count: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    connections = []
    for start_at in range(0, count, 500):  # in batches: the listen backlog is finite
        batch = await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", port) for _ in range(min(500, count - start_at)))
        )
        for _, writer in batch:
            writer.write(request)
        connections.extend(batch)
    return connections


async def first_lines(
    connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
) -> list[tuple[float, bytes]]:
    async def one(reader: asyncio.StreamReader) -> tuple[float, bytes]:
        line = await reader.readline()
        return time.perf_counter(), line

    return await asyncio.gather(*(one(reader) for reader, _ in connections))


def close(connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for _, writer in connections:
        writer.close()


async def measure(url: str, port: int, token: str, etag: str, count: int, pid: int) -> dict[str, object]:
    auth = f"Authorization: Bearer {token}\r\n"
    plain = f"GET {SPACES} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode()
    held = f"GET {SPACES} HTTP/1.1\r\nHost: x\r\n{auth}If-None-Match: {etag}\r\nPrefer: wait=60\r\n\r\n".encode()

    watchers = await open_held(port, held, count)
    await asyncio.sleep(5)  # every watch is held now
    held_mb = resident_mb(pid)
    waiting = asyncio.ensure_future(first_lines(watchers))
    loop = asyncio.get_running_loop()
    body = {"accessKey": "CHANGED", "buckets": ["backups"]}
    headers = {"Authorization": f"Bearer {token}"}

    def write() -> tuple[float, float]:
        sent = time.perf_counter()
        response = requests.patch(url + SPACES, json=body, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        return sent, time.perf_counter()

    sent, answered = await loop.run_in_executor(None, write)
    lines = await asyncio.wait_for(waiting, 60)
    latencies = sorted(at - sent for at, _ in lines)
    statuses = {line.split(b" ")[1].decode() for _, line in lines}
    for reader, _ in watchers:  # the rest of each answer, so the connection can be used again
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:"))
        await reader.readexactly(length)
    await asyncio.sleep(1)
    for _, writer in watchers:
        writer.write(plain)
    started = time.perf_counter()
    baseline = await first_lines(watchers)
    plain_spread = max(at for at, _ in baseline) - started
    close(watchers)
    await asyncio.sleep(2)
    return {
        "watchers": count,
        "answered 200": sum(line.startswith(b"HTTP/1.1 200") for _, line in lines),
        "statuses": ",".join(sorted(statuses)),
        "the write itself (PATCH sent to its answer)": f"{(answered - sent) * 1000:.0f}ms",
        "watchers answered, from the write sent: p50": f"{statistics.median(latencies) * 1000:.0f}ms",
        "watchers answered, from the write sent: max": f"{latencies[-1] * 1000:.0f}ms",
        "baseline: one plain GET on each connection at once, all answered": f"{plain_spread * 1000:.0f}ms",
        "RSS with the watches held": f"{held_mb:.0f} MB",
        "RSS after": f"{resident_mb(pid):.0f} MB",
    }


def main(count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * count + 1000)), hard))
    with tempfile.TemporaryDirectory() as workdir:
        pg = LocalPostgres.create(Path(workdir) / "pg")
        pg.start()
        server = None
        try:
            token = asyncio.run(prepare(pg.url))
            port = free_port()
            env = service_env(
                pg.url, SPACESVC_RATE_LIMIT="off", SPACESVC_LOG_LEVEL="INFO", SPACESVC_SHUTDOWN_DELAY="0s"
            )
            url = f"http://127.0.0.1:{port}"
            server = start(spacesvc_serve(port), env, f"{url}/healthz", Path(workdir) / "spacesvc.log")
            headers = {"Authorization": f"Bearer {token}"}
            body = {"accessKey": "BENCHKEY", "secretKey": "s" * 40, "buckets": ["backups"]}
            etag = requests.put(url + SPACES, json=body, headers=headers, timeout=5).headers["ETag"]
            idle_mb = resident_mb(server.pid)
            figures = uvloop.run(measure(url, port, token, etag, count, server.pid))
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
            pg.destroy()
    print(f"one spacesvc process, {count} watchers, 2 shared cores (the watchers run on them too):")
    print(f"  RSS idle: {idle_mb:.0f} MB")
    for name, value in figures.items():
        print(f"  {name}: {value}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--watchers", type=int, default=10_000)
    main(parser.parse_args().watchers)
