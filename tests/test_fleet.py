"""Running a fleet (docs/guarantees.md): budgets shared in Redis across processes, `serve --workers`, a
drained shutdown (also behind a real HAProxy, under load), and the metrics that show it."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import psutil
import pytest

from tests.support.api import BODY, SPACES, Tokens, auth
from tests.support.cli import run, service_env
from tests.support.haproxy import HAProxy
from tests.support.logs import log_lines
from tests.support.postgres import free_port
from tests.support.prometheus import sample
from tests.support.redis import RedisServer
from tests.support.service import Serve


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


async def test_three_processes_share_one_budget_in_redis(database_url: str, tokens: Tokens, redis: RedisServer) -> None:
    budget = 90
    env = service_env(database_url, SPACESVC_RATE_LIMIT=f"{budget}/60", SPACESVC_RATE_LIMIT_STORAGE=redis.url)
    servers = [Serve(env, free_port()) for _ in range(3)]
    try:
        headers = auth(await tokens.create("viewer"))
        async with aiohttp.ClientSession(headers=headers) as http:

            async def hammer(server: Serve) -> list[int]:
                statuses = []
                for _ in range(60):
                    async with http.get(f"{server.url}{SPACES}") as resp:
                        statuses.append(resp.status)
                return statuses

            results = await asyncio.gather(*(hammer(server) for server in servers))
        admitted = sum(status == 200 for statuses in results for status in statuses)
        refused = sum(status == 429 for statuses in results for status in statuses)
        print(f"one budget of {budget} across 3 processes: {admitted} admitted of {3 * 60}")
        assert abs(admitted - budget) <= budget * 0.1
        assert admitted + refused == 3 * 60  # nothing else: no 500, no 503
        assert all(200 in statuses for statuses in results)  # each process spent from the one budget
    finally:
        for server in servers:
            server.stop()


async def test_the_storage_going_away_serves_unlimited_logs_once_and_comes_back(
    database_url: str, tokens: Tokens, redis: RedisServer
) -> None:
    env = service_env(database_url, SPACESVC_RATE_LIMIT="5/60", SPACESVC_RATE_LIMIT_STORAGE=redis.url)
    server = Serve(env, free_port())
    try:
        async with aiohttp.ClientSession(headers=auth(await tokens.create("viewer"))) as http:
            async with http.get(f"{server.url}{SPACES}") as resp:
                assert resp.status == 200 and resp.headers["RateLimit"].startswith('"requests";r=4;')
            redis.stop()
            statuses = []
            for _ in range(30):  # far over the budget of 5: served, unlimited, never failed
                async with http.get(f"{server.url}{SPACES}") as resp:
                    statuses.append(resp.status)
                    assert "RateLimit" not in resp.headers
            assert statuses == [200] * 30
            async with http.get(f"{server.url}/metrics") as resp:
                assert sample(await resp.text(), "spacesvc_rate_limit_storage_errors_total") >= 30
                # (read with the storage down: /metrics is never rate limited)
            redis.start()  # empty again, as after a restart of a cache
            await asyncio.sleep(1.5)
            async with http.get(f"{server.url}{SPACES}") as resp:
                assert resp.status == 200 and resp.headers["RateLimit"].startswith('"requests";r=4;')
            async with http.get(f"{server.url}/metrics") as resp:
                assert sample(await resp.text(), "spacesvc_rate_limit_storage_up") == 1
    finally:
        log = server.stop()
    messages = [line["msg"] for line in log_lines(log) if line["logger"] == "spacesvc.ratelimit"]
    assert len(messages) == 2, messages  # one line when it went, one when it came back
    assert "serving without rate limits" in messages[0] and "answers again" in messages[1]
    assert redis.url not in log
    assert "Traceback" not in log


async def test_workers_serve_one_port_and_their_metrics_add_up(database_url: str) -> None:
    env = service_env(database_url, SPACESVC_SHUTDOWN_DELAY="0.2s")
    server = Serve(env, free_port(), "--workers", "2")
    try:
        workers = [
            child
            for child in psutil.Process(server.process.pid).children()
            if "spawn_main" in " ".join(child.cmdline())
        ]
        assert len(workers) == 2
        for _ in range(40):  # a new connection each time: the kernel spreads them over the workers
            async with aiohttp.ClientSession() as http, http.get(f"{server.url}/healthz") as resp:
                assert resp.status == 200
        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/metrics") as resp:
            text = await resp.text()
        served = sample(text, "spacesvc_http_requests_total", method="GET", route="/healthz", status="200")
        assert served == 40  # whichever worker answered /metrics counts them all
        pids = {
            line.split('pid="')[1].split('"')[0] for line in text.splitlines() if "spacesvc_cache_listening{" in line
        }
        assert len(pids) == 2  # each worker has its own listening connection
    finally:
        log = server.stop()
    assert server.process.returncode == 0
    assert any("budgets are kept per process: 2 workers" in line["msg"] for line in log_lines(log))
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in workers)


async def test_sigterm_drains_readiness_off_first_then_watches_answered_then_exit_0(
    database_url: str, tokens: Tokens
) -> None:
    server = Serve(service_env(database_url, SPACESVC_SHUTDOWN_DELAY="2s"), free_port())
    try:
        async with aiohttp.ClientSession(headers=auth(await tokens.create("admin"))) as http:
            async with http.put(f"{server.url}{SPACES}", json=BODY) as resp:
                etag = resp.headers["ETag"]
            watch = asyncio.ensure_future(
                http.get(f"{server.url}{SPACES}", headers={"If-None-Match": etag, "Prefer": "wait=60"})
            )
            await asyncio.sleep(0.3)
            server.process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            await asyncio.sleep(0.3)
            async with http.get(f"{server.url}/readyz") as resp:
                assert resp.status == 503 and (await resp.json())["message"] == "Not ready: shutting down."
            async with http.get(f"{server.url}{SPACES}") as resp:  # still serving during the delay ...
                assert resp.status == 200 and resp.headers["Connection"] == "close"  # ... closing as it goes
            held = await asyncio.wait_for(watch, 10)
            assert held.status == 304  # answered at shutdown, not after its 60 s
            assert 2 <= time.monotonic() - started < 8
    finally:
        server.stop()
    assert server.process.returncode == 0


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_ctrl_c_stops_at_once_without_the_load_balancer_delay(database_url: str, workers: str) -> None:
    """SIGINT is someone at a terminal: no load balancer to wait for (SIGTERM keeps the delay)."""
    server = Serve(service_env(database_url, SPACESVC_SHUTDOWN_DELAY="5s"), free_port(), "--workers", workers)
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/readyz") as resp:
            assert resp.status == 200
        started = time.monotonic()
        server.process.send_signal(signal.SIGINT)
        server.process.wait(timeout=30)
        assert time.monotonic() - started < 3
    finally:
        log = server.stop()
    assert server.process.returncode == 0
    assert not any("draining" in line["msg"] for line in log_lines(log))


async def test_a_replica_restarted_behind_haproxy_under_load_fails_no_request(
    database_url: str, tokens: Tokens, tmp_path: Path
) -> None:
    env = service_env(database_url, SPACESVC_SHUTDOWN_DELAY="2s", SPACESVC_RATE_LIMIT="off")
    replicas = [Serve(env, free_port()) for _ in range(2)]
    proxy = HAProxy(tmp_path, [replica.port for replica in replicas])
    token = await tokens.create("admin")
    outcomes: dict[str, int] = {}
    stop = asyncio.Event()
    try:
        async with aiohttp.ClientSession(headers=auth(token)) as http:
            async with http.put(f"{proxy.url}{SPACES}", json=BODY) as resp:
                assert resp.status == 201
            await asyncio.sleep(1)  # both replicas checked healthy

            etag = resp.headers["ETag"]

            async def client(watching: bool) -> None:
                # one keep-alive connection per client, as a busy API client holds it; some
                # clients watch (each request held for a second), the others read, each at most
                # 100 requests a second: busy replicas, not a machine so saturated that their
                # health checks time out (that would test the machine, not the drain)
                held = {"If-None-Match": etag, "Prefer": "wait=1"} if watching else {}
                async with aiohttp.ClientSession(headers={**auth(token), **held}) as own:
                    while not stop.is_set():
                        try:
                            async with own.get(f"{proxy.url}{SPACES}") as resp:
                                await resp.read()
                                key = str(resp.status)
                        except aiohttp.ClientError as error:
                            key = type(error).__name__
                        outcomes[key] = outcomes.get(key, 0) + 1
                        await asyncio.sleep(0.01)

            load = [asyncio.create_task(client(watching=i < 5)) for i in range(20)]
            await asyncio.sleep(1.5)
            before = sum(outcomes.values())
            replicas[0].process.send_signal(signal.SIGTERM)
            await asyncio.sleep(5)  # its delay, its drain, and some more on the other replica
            stop.set()
            await asyncio.gather(*load)
    finally:
        proxy.stop()
        for replica in replicas:
            replica.stop()
    print(f"drained restart behind HAProxy, 15 reading and 5 watching keep-alive clients: {outcomes}")
    assert proxy.servers_marked_down() == ["r0"], proxy.log()  # the restarted one, never the survivor
    assert set(outcomes) == {"200", "304"}, outcomes  # reads, and watches answered (also at shutdown)
    assert outcomes["200"] > before > 100
    assert replicas[0].process.returncode == 0


def test_a_malformed_storage_url_is_one_line_that_does_not_repeat_it(database_url: str) -> None:
    url = "redis://:hunter2-password@redis:63790x/0"
    result = run("serve", "--port", str(free_port()), env=service_env(database_url, SPACESVC_RATE_LIMIT_STORAGE=url))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "spacesvc: SPACESVC_RATE_LIMIT_STORAGE must be memory or a redis:// (or rediss://) URL, e.g. "
        "redis://redis:6379/0; the value is not a valid URL (not shown: it may hold a password)"
    ]
    assert "hunter2" not in result.stdout + result.stderr
