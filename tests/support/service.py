"""`spacesvc serve` as a separate process, started and stopped as an operator would."""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping

from tests.support.cli import SPACESVC


class Serve:
    """`spacesvc serve --port PORT` with ``env``; collects stdout until it prints the docs URL.

    Its log (stderr) goes to a file, which no amount of logging can fill up and block. Unless
    ``env`` says otherwise, it stops without the shutdown delay (tests/test_fleet.py tests that).
    """

    def __init__(self, env: Mapping[str, str], port: int, *extra: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - kept until stop() reads it
        self.process = subprocess.Popen(
            [SPACESVC, "serve", "--port", str(port), *extra],
            env={"SPACESVC_SHUTDOWN_DELAY": "0s", **env},
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        self.stdout: list[str] = []
        self.stderr = ""
        assert self.process.stdout is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.stdout.append(line.rstrip("\n"))
            if "API docs:" in line:
                break
        assert any("API docs:" in line for line in self.stdout), self.stop()

    def read_token_lines(self) -> list[str]:
        assert self.process.stdout is not None
        lines = []
        for _ in range(2):
            lines.append(self.process.stdout.readline().rstrip("\n"))
        self.stdout.extend(lines)
        return lines

    def kill(self) -> str:
        """As a crash would: SIGKILL, nothing cleaned up by the service; returns its log."""
        self.process.kill()
        self.process.wait(timeout=30)
        return self.stop()

    def stop(self) -> str:
        """Stop it as an operator would (SIGTERM); keeps the rest of stdout, returns its log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        assert self.process.stdout is not None
        if not self.process.stdout.closed:  # stop() may be called again
            # read() rather than communicate(): what readline() has buffered already is kept
            self.stdout.extend(self.process.stdout.read().splitlines())
            self.process.stdout.close()
        if not self._log.closed:
            self._log.seek(0)
            self.stderr = self._log.read()
            self._log.close()
        return self.stderr
