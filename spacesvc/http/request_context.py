"""The outermost middleware: a request id for every request, echoed in ``X-Request-ID``, and one
JSON access-log line when the request ends."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from ulid import ULID

from spacesvc.http.errors import ClientDisconnected
from spacesvc.http.types import Handler
from spacesvc.typedefs import PRINCIPAL, REQUEST_ID

access_log = logging.getLogger("spacesvc.access")

# The status logged for a request whose client went away before it could be answered (as nginx).
CLIENT_CLOSED_REQUEST = 499
# A longer path is logged cut to this many characters (with a marker): the log is not a store.
LOGGED_PATH_CHARS = 256


def new_request_id() -> str:
    return f"req_{ULID()}"


def log_access(
    request_id: str, method: str, path: str, status: int, duration_ms: float, token: str | None, remote: str | None
) -> None:
    if len(path) > LOGGED_PATH_CHARS:
        path = f"{path[:LOGGED_PATH_CHARS]}…(+{len(path) - LOGGED_PATH_CHARS})"
    access_log.info(
        "%s %s %d",
        method,
        path,
        status,
        extra={
            "requestId": request_id,
            "method": method,
            "path": path,
            "status": status,
            "durationMs": duration_ms,
            "token": token,
            "remote": remote,
        },
    )


@web.middleware
async def request_context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every request an id, echo it in X-Request-ID, and log one line when it ends."""
    request_id = new_request_id()
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers["X-Request-ID"] = request_id
        return response
    except ClientDisconnected:
        # not a server error: there is no one left to answer
        status = CLIENT_CLOSED_REQUEST
        return web.Response(status=CLIENT_CLOSED_REQUEST)
    finally:
        principal = request.get(PRINCIPAL)
        log_access(
            request_id,
            request.method,
            request.path,
            status,
            round((time.perf_counter() - started) * 1000, 2),
            principal.name if principal else None,
            request.remote,
        )
