"""A real HAProxy (Debian's ``haproxy``) in front of service replicas, health-checking ``/readyz``
as the README's "Running a fleet" recommends: a replica is taken out after 2 failed checks in a
row (``fall 2``), each given ``timeout check`` to answer, so one slow answer of a busy replica
does not take it out; with ``inter 250ms`` a draining replica is out within about 0.75 s, well
inside the tests' 2 s shutdown delay. HAProxy's defaults otherwise: it retries a request only
when the connection to a replica fails, not when a replica drops one it was answering."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.support.postgres import free_port

CONFIG = """
global
    maxconn 2000
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout check 1s
    option redispatch
    retries 3
backend replicas
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 250ms fall 2 rise 2
{servers}
frontend api
    bind 127.0.0.1:{port}
    default_backend replicas
"""


class HAProxy:
    def __init__(self, workdir: Path, backend_ports: list[int]) -> None:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(binary).exists():
            raise RuntimeError("the tests need haproxy (apt-get install haproxy)")
        self.port = free_port()
        servers = "\n".join(f"    server r{i} 127.0.0.1:{port} check" for i, port in enumerate(backend_ports))
        config = workdir / "haproxy.cfg"
        config.write_text(CONFIG.format(servers=servers, port=self.port))
        self.log_file = workdir / "haproxy.log"
        log = self.log_file.open("wb")
        self.process = subprocess.Popen([binary, "-f", str(config), "-db"], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("haproxy did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def servers_marked_down(self) -> list[str]:
        """The replicas HAProxy took out, in order ("Server replicas/r0 is DOWN, …" in its log)."""
        return re.findall(r"Server replicas/(\w+) is DOWN", self.log())
