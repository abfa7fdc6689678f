"""The connection level: what happens before a request reaches the middlewares.

aiohttp's parser rejects some requests before any middleware runs (a header holding a control
character, an oversized request line or header, an unsupported Content-Encoding, a request line
that is not HTTP), and by default answers them in text/plain, echoing the offending bytes, and
logs the whole header at ERROR. ``Protocol`` answers them with the envelope and an
``X-Request-ID`` instead, and logs one access line that holds no header value.

It also bounds how long a client may take to send a request's head: a client that has begun a
request and not finished its headers within ``HEADER_TIMEOUT`` is disconnected (idle keep-alive
connections are closed by aiohttp after the keep-alive timeout). The body is bounded where it is
read (``jsonio.read_body``), and what is left of a body after the answer is read for at most
``LINGERING_TIME``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestPayloadError

from spacesvc.http.errors import ApiError, internal_error, validation_error
from spacesvc.http.jsonio import json_response
from spacesvc.http.private_api import ConnectionHandler, HandlerServer, ServerRunner
from spacesvc.http.request_context import log_access, new_request_id, request_metrics

log = logging.getLogger("spacesvc.server")

# A client that has started sending a request gets this long to finish its headers.
HEADER_TIMEOUT = 30.0
# After answering a request whose body was not read to the end, aiohttp reads on for at most this
# long before closing, so the client receives the answer. With jsonio.BODY_TIMEOUT this keeps a
# slow body's connection under 30 s in all.
LINGERING_TIME = 3.0


def parser_error(error: BaseException | None) -> ApiError:
    """What to tell a client whose request the parser rejected: never the bytes it sent."""
    if isinstance(error, http_exceptions.LineTooLong):
        return validation_error(
            "The request line or a header is too long.", status=431, hint="Keep the URL and each header under 8 KiB."
        )
    if isinstance(error, http_exceptions.ContentEncodingError):
        return validation_error(
            "The request's Content-Encoding is not supported.",
            status=415,
            hint="Send the body as is, or with Content-Encoding gzip or deflate.",
        )
    if isinstance(error, http_exceptions.BadStatusLine):
        return validation_error("The request line is not valid HTTP.")
    if isinstance(error, http_exceptions.InvalidHeader):
        return validation_error(
            "A request header is malformed (a header value may not hold control characters).",
            hint="Check the headers the client sends, the Authorization header included.",
        )
    if isinstance(error, http_exceptions.BadHttpMessage):
        return validation_error("The request is not valid HTTP.")
    return internal_error()


class Protocol(ConnectionHandler):
    """aiohttp's connection handler, with the envelope for parser errors and a header deadline."""

    __slots__ = ("_had_request", "_header_deadline")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._had_request = False

    def data_received(self, data: bytes) -> None:
        waiting_for_a_request = self.waiting_for_request
        super().data_received(data)
        if self.head_received:
            self._had_request = True
            if self._header_deadline is not None:  # most heads arrive whole: no deadline was set
                self._cancel_header_deadline()
        elif (waiting_for_a_request or not self._had_request) and self._header_deadline is None:
            # part of a head: between requests, or on a connection so new its handler has not
            # started waiting (bytes of a body being read, or read after its answer, are not)
            self._header_deadline = self.event_loop.call_later(HEADER_TIMEOUT, self._headers_too_slow)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if not self.head_received and not self.request_in_progress:
            log.info("closed a connection whose request head took over %gs", HEADER_TIMEOUT)
            self.force_close()

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        error = kwargs.get("exc_info")
        if isinstance(error, RequestPayloadError | ConnectionError):
            # after the answer, aiohttp reads what is left of the body; a body that cannot be
            # decoded, or a client gone, ends the connection and is not a server error
            log.info("closed a connection whose request body could not be read (%s)", type(error).__name__)
            return
        super().log_exception(*args, **kwargs)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request the parser rejected (or, status 500, an error no middleware could answer)."""
        if request.writer.output_size > 0:
            raise ConnectionError("the response has begun; no error can be sent")
        request_id = new_request_id()
        if status >= 500:
            log.error("unhandled error", exc_info=exc, extra={"requestId": request_id})
            error = internal_error()
        else:
            error = parser_error(exc)
            log.info(
                "rejected a request the HTTP parser could not read (%s)",
                type(exc).__name__,
                extra={"requestId": request_id},
            )
        response = json_response(
            error.body(request_id), status=error.status, headers={**error.headers, "X-Request-ID": request_id}
        )
        response.force_close()
        log_access(request_id, "-", "-", error.status, 0.0, None, request.remote)
        if isinstance(self.web_server, Server) and self.web_server.counted:
            request_metrics.observe(request, error.status, 0.0)
        return response


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed (a dependency everywhere but Windows), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return None
    return uvloop.new_event_loop


class Server(HandlerServer):
    handler_class = Protocol
    counted = True  # whether parser rejections are counted in the metrics (SPACESVC_METRICS)


class Runner(ServerRunner):
    """An AppRunner whose connections are handled by ``Protocol``."""

    server_class = Server

    def __init__(self, app: web.Application, *, metrics: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("lingering_time", LINGERING_TIME)
        super().__init__(app, **kwargs)
        self._metrics = metrics

    def server_made(self, server: HandlerServer) -> None:
        assert isinstance(server, Server)
        server.counted = self._metrics
