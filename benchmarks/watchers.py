"""The watcher target (README.md, Benchmarks): 10,000 concurrent watches (``Prefer: wait=60``
with the current ``If-None-Match``) held by one `spacesvc serve` process, then one write: how long until every
watcher has its 200, and the process's resident memory while they are held and after.

Starts its own PostgreSQL and one `spacesvc serve` (db backend, access log at INFO into a file).
The watchers are raw asyncio connections in this process (uvloop), one request each, read by a
plain protocol (no task or stream reader per connection: the client shares the 2 cores with the
server); a watcher's latency is from the write sent to the first bytes (the status line) of its own
answer. As a baseline in the same run, the same connections then send one plain GET each at once,
read the same way: how long until all are answered is what answering that many requests costs
here at all.

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
from typing import cast

import requests
import uvloop

from benchmarks import resident_mb, service_env, spacesvc_serve, start
from benchmarks.read_load import prepare
from tests.support.postgres import LocalPostgres, free_port

SPACES = "/api/settings/spaces"


class Answers:
    """What the connections of one round have received: the moment each answer's first bytes came
    (its status line with them: an answer here fits one segment), and its status code. ``done``
    resolves when every connection has a whole answer."""

    def __init__(self, count: int) -> None:
        self.first_bytes: list[tuple[float, bytes]] = []
        self.left = count
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def answered(self) -> None:
        self.left -= 1
        if self.left == 0 and not self.done.done():
            self.done.set_result(None)


class Client(asyncio.Protocol):
    """One connection of the benchmark's client: a plain protocol, no task or stream reader per
    connection, so the client costs the 2 shared cores little beside the server (the watchers and
    the baseline are measured through it alike)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.answers: Answers | None = None
        self.buffer = bytearray()
        self.length: int | None = None  # the answer's head and body, once its head is in

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not registered as one

    def send(self, request: bytes, answers: Answers) -> None:
        assert self.transport is not None
        self.answers, self.buffer, self.length = answers, bytearray(), None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        answers = self.answers
        if answers is None:
            return
        if not self.buffer:
            answers.first_bytes.append((time.perf_counter(), data[: data.find(b"\r\n")]))
        self.buffer += data
        if self.length is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            at = head.find(b"content-length:")
            self.length = end + 4 + int(head[at + 15 :].split(b"\r\n", 1)[0])
        if len(self.buffer) >= self.length:
            self.answers = None
            answers.answered()


async def open_held(port: int, request: bytes, count: int) -> tuple[list[Client], Answers]:
    loop = asyncio.get_running_loop()
    answers = Answers(count)
    connections: list[Client] = []
    for start_at in range(0, count, 500):  # in batches: the listen backlog is finite
        batch = await asyncio.gather(
            *(loop.create_connection(Client, "127.0.0.1", port) for _ in range(min(500, count - start_at)))
        )
        for transport, client in batch:
            client.connection_made(transport)  # uvloop may call it only after this
            client.send(request, answers)
        connections.extend(client for _, client in batch)
    return connections, answers


def close(connections: list[Client]) -> None:
    for client in connections:
        assert client.transport is not None
        client.transport.close()


async def measure(url: str, port: int, token: str, etag: str, count: int, pid: int) -> dict[str, object]:
    auth = f"Authorization: Bearer {token}\r\n"
    plain = f"GET {SPACES} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode()
    held = f"GET {SPACES} HTTP/1.1\r\nHost: x\r\n{auth}If-None-Match: {etag}\r\nPrefer: wait=60\r\n\r\n".encode()

    watchers, waiting = await open_held(port, held, count)
    await asyncio.sleep(5)  # every watch is held now
    held_mb = resident_mb(pid)
    loop = asyncio.get_running_loop()
    body = {"accessKey": "CHANGED", "buckets": ["backups"]}
    headers = {"Authorization": f"Bearer {token}"}

    def write() -> tuple[float, float]:
        sent = time.perf_counter()
        response = requests.patch(url + SPACES, json=body, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        return sent, time.perf_counter()

    sent, answered = await loop.run_in_executor(None, write)
    await asyncio.wait_for(waiting.done, 60)
    lines = waiting.first_bytes
    latencies = sorted(at - sent for at, _ in lines)
    statuses = {line.split(b" ")[1].decode() for _, line in lines}
    await asyncio.sleep(1)
    baseline = Answers(count)
    started = time.perf_counter()
    for client in watchers:
        client.send(plain, baseline)
    await asyncio.wait_for(baseline.done, 60)
    plain_spread = max(at for at, _ in baseline.first_bytes) - started
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
