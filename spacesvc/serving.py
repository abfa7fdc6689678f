"""``spacesvc serve``: one process, or ``--workers N`` processes on one port, each draining on
SIGTERM (docs/guarantees.md).

A drained stop, in order: ``/readyz`` answers 503 and every response closes its connection
(``spacesvc.lifecycle``); the process keeps serving for ``SPACESVC_SHUTDOWN_DELAY`` while load
balancers notice; then it stops accepting, closes idle keep-alive connections, answers held
watches, gives in-flight requests up to ``SPACESVC_SHUTDOWN_TIMEOUT``, and exits 0. SIGTERM
repeated changes nothing (systemd and the supervisor may both send it). SIGINT (Ctrl-C, someone
at a terminal) skips the delay: the same stop without waiting for load balancers, also after a
SIGTERM.

With N workers, the supervisor (this process) applies migrations and prints what the operator
needs; each worker is a fresh interpreter (``spawn``) with its own event loop, pool and listening
connection, bound to the port with ``SO_REUSEPORT`` so the kernel spreads connections over them.
The supervisor forwards SIGTERM and SIGINT to every worker, waits for their drains, and restarts
a worker that dies on its own. Metrics of all workers are added up through
``PROMETHEUS_MULTIPROC_DIR`` (``spacesvc.metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType

from aiohttp import web
from prometheus_client import multiprocess

from spacesvc.app import create_app
from spacesvc.errors import ConfigError
from spacesvc.http.server import Runner, event_loop_factory
from spacesvc.lifecycle import LIFECYCLE
from spacesvc.logs import configure_logging
from spacesvc.settings import Settings, ascii_number

log = logging.getLogger("spacesvc")

# Connections the kernel queues before the process accepts them (capped by net.core.somaxconn):
# aiohttp's 128 drops a burst of clients (thousands of watchers reconnecting) into SYN retries.
LISTEN_BACKLOG = 2048
# A worker that dies on its own is started again after this long.
RESTART_SECONDS = 1.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True)
class Listen:
    host: str
    port: int
    reuse_port: bool = False

    @property
    def url(self) -> str:
        return f"http://{self.host if ':' not in self.host else f'[{self.host}]'}:{self.port}"


class ListenError(ConfigError):
    """The port cannot be listened on; str() is one line."""


def workers_for(value: str) -> int:
    """``--workers``: a positive number, or ``auto`` (one per CPU this process may use)."""
    if value == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if not ascii_number(value) or int(value) < 1:
        raise ConfigError(f"--workers {value!r} must be a positive number or auto")
    return int(value)


def run(settings: Settings, listen: Listen, workers: int, announce: Callable[[], None]) -> None:
    """Serve until stopped; ``announce`` prints the operator's lines once the port accepts."""
    if workers == 1:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(serve(settings, listen, announce))
        return
    if settings.rate_limit_storage == "memory" and (settings.rate_limit or settings.auth_failure_limit):
        log.warning(
            "rate budgets are kept per process: %d workers admit up to %d times SPACESVC_RATE_LIMIT; "
            "set SPACESVC_RATE_LIMIT_STORAGE=redis://… to share one budget",
            workers,
            workers,
        )
    Supervisor(settings, Listen(listen.host, listen.port, reuse_port=True), workers).run(announce)


async def serve(settings: Settings, listen: Listen, announce: Callable[[], None] | None = None) -> None:
    """One process: serve on ``listen`` until SIGTERM or SIGINT, then drain and return."""
    app = create_app(settings)
    runner = Runner(
        app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=settings.keepalive_timeout,
        shutdown_timeout=settings.shutdown_timeout,
        metrics=settings.metrics,
    )
    await runner.setup()
    try:
        site = web.TCPSite(
            runner, listen.host, listen.port, reuse_port=listen.reuse_port or None, backlog=LISTEN_BACKLOG
        )
        try:
            await site.start()
        except OSError as error:
            raise ListenError(f"cannot listen on {listen.host}:{listen.port}: {error.strerror}") from None
        if announce is not None:
            announce()
        stop, hurry = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)

        def interrupted() -> None:
            hurry.set()
            stop.set()

        loop.add_signal_handler(signal.SIGINT, interrupted)
        await stop.wait()
        app[LIFECYCLE].drain()
        if not hurry.is_set():
            log.info(
                "draining: /readyz answers 503; serving %gs more while load balancers notice", settings.shutdown_delay
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(settings.shutdown_delay):
                    await hurry.wait()
        log.info("not accepting connections; finishing requests in flight (up to %gs)", settings.shutdown_timeout)
    finally:
        started = time.monotonic()
        await runner.cleanup()
        log.info("stopped after %.1fs of shutdown", time.monotonic() - started)


def _worker(settings: Settings, listen: Listen, ready: multiprocessing.SimpleQueue[int] | None, index: int) -> None:
    """A worker process's life (the target of ``spawn``); ``ready`` hears when it accepts (at start-up)."""
    configure_logging(settings.log_level)
    announce = (lambda: ready.put(index)) if ready is not None else None
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(serve(settings, listen, announce))


class Supervisor:
    """N worker processes on one port: started, restarted when one dies, stopped together."""

    def __init__(self, settings: Settings, listen: Listen, count: int) -> None:
        self.settings = settings
        self.listen = listen
        self.count = count
        self.context = multiprocessing.get_context("spawn")
        self.ready: multiprocessing.SimpleQueue[int] = self.context.SimpleQueue()
        self.workers: dict[int, BaseProcess] = {}
        self.signalled: set[tuple[int, signal.Signals]] = set()  # each worker gets each signal once
        self.stop_signal = signal.SIGTERM  # forwarded to the workers: SIGINT once Ctrl-C was pressed
        self.stopping = False

    def run(self, announce: Callable[[], None]) -> None:
        reserved = self._reserve_port()
        metrics_dir = tempfile.mkdtemp(prefix="spacesvc-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # read by each worker as it starts
        previous = {signum: signal.signal(signum, self._stop) for signum in STOP_SIGNALS}
        try:
            for index in range(self.count):
                self._start(index, announce=True)
            self._await_ready(announce)
            self._watch()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._stop_all()
            reserved.close()
            shutil.rmtree(metrics_dir, ignore_errors=True)
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

    def _reserve_port(self) -> socket.socket:
        """Bind (without listening) to the port with SO_REUSEPORT: a port another program holds
        is one clear line now, and the workers' sockets join this one."""
        family = socket.AF_INET6 if ":" in self.listen.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((self.listen.host, self.listen.port))
        except OSError as error:
            sock.close()
            raise ListenError(f"cannot listen on {self.listen.host}:{self.listen.port}: {error.strerror}") from None
        return sock

    def _start(self, index: int, *, announce: bool = False) -> None:
        ready = self.ready if announce else None
        process = self.context.Process(
            target=_worker, args=(self.settings, self.listen, ready, index), name=f"spacesvc-worker-{index}"
        )
        process.start()
        self.workers[index] = process
        if self.stopping:  # a stop signal came while it started
            self._signal_workers()

    def _await_ready(self, announce: Callable[[], None]) -> None:
        waiting = set(self.workers)
        while waiting and not self.stopping:
            if self.ready.empty():
                dead = [index for index in waiting if not self.workers[index].is_alive()]
                if dead:
                    raise ListenError(f"worker {dead[0]} exited while starting (its log says why)")
                time.sleep(0.05)
                continue
            waiting.discard(self.ready.get())
        if not self.stopping:
            log.info("%d workers serving", self.count)
            announce()

    def _watch(self) -> None:
        while not self.stopping:
            sentinels = {process.sentinel: index for index, process in self.workers.items()}
            for sentinel in multiprocessing.connection.wait(list(sentinels), timeout=0.5):
                index = sentinels[sentinel]  # type: ignore[index]
                if self.stopping:
                    break
                process = self.workers[index]
                process.join()
                self._forget(process)
                log.error("worker %d exited (code %s); starting it again", index, process.exitcode)
                time.sleep(RESTART_SECONDS)
                if not self.stopping:
                    self._start(index)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            log.info("stopping %d workers (signal %s)", len(self.workers), signal.Signals(signum).name)
        self.stopping = True
        if signum == signal.SIGINT:
            self.stop_signal = signal.SIGINT
        self._signal_workers()

    def _signal_workers(self) -> None:
        for process in self.workers.values():
            if process.pid is None or not process.is_alive():
                continue
            sent = (process.pid, self.stop_signal)
            if sent not in self.signalled:
                self.signalled.add(sent)
                os.kill(process.pid, self.stop_signal)

    def _stop_all(self) -> None:
        self.stopping = True
        self._signal_workers()
        deadline = time.monotonic() + self.settings.shutdown_delay + self.settings.shutdown_timeout + 10
        for process in self.workers.values():
            process.join(max(deadline - time.monotonic(), 0.1))
            if process.is_alive():
                log.error("worker %s did not stop in time; killing it", process.name)
                process.kill()
                process.join()
            self._forget(process)

    @staticmethod
    def _forget(process: BaseProcess) -> None:
        if process.pid is not None:
            multiprocess.mark_process_dead(process.pid)
