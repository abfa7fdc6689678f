"""The outermost middleware: a request id for every request, echoed in ``X-Request-ID``, and one
JSON access-log line when the request ends."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from ulid import ULID

from spacesvc.http.types import Handler
from spacesvc.typedefs import PRINCIPAL, REQUEST_ID

access_log = logging.getLogger("spacesvc.access")


def new_request_id() -> str:
    return f"req_{ULID()}"


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
    finally:
        principal = request.get(PRINCIPAL)
        access_log.info(
            "%s %s %d",
            request.method,
            request.path,
            status,
            extra={
                "requestId": request_id,
                "method": request.method,
                "path": request.path,
                "status": status,
                "durationMs": round((time.perf_counter() - started) * 1000, 2),
                "token": principal.name if principal else None,
                "remote": request.remote,
            },
        )
