"""Capturing what the service logs, formatted as in production."""

from __future__ import annotations

import json
import logging

from spacesvc.logs import JsonFormatter


def log_lines(log: str) -> list[dict]:
    """The JSON lines of a service's stderr, parsed (anything else on it left out)."""
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


class ServerLog(logging.Handler):
    """Every log line the service writes during the test, formatted as in production."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)
