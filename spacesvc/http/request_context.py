"""The outermost middleware (the pipeline's edge, ``spacesvc.http.pipeline``): a request id for
every request, echoed in ``X-Request-ID``, the error envelope for every failure, one JSON
access-log line when the request ends, and its count and time in the metrics, labelled by route
template.

The keys of what the pipeline stores on a request are here: its id (set here) and its principal
(set by ``spacesvc.http.authentication``, read by the layers after it and by the access log)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp.web_urldispatcher import AbstractResource
from prometheus_client import Counter, Histogram

from spacesvc.http.errors import ClientDisconnected
from spacesvc.http.private_api import match_info as matched
from spacesvc.http.types import Handler
from spacesvc.instruments import DURATION, REQUESTS
from spacesvc.logs import access_log
from spacesvc.tokens.model import Principal

REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id")
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal")

# The status logged for a request whose client went away before it could be answered (as nginx).
CLIENT_CLOSED_REQUEST = 499
# A longer path is logged cut to this many characters (with a marker): the log is not a store.
LOGGED_PATH_CHARS = 256


CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# every pair of Crockford characters: 10 bits at a time
_PAIRS = [first + second for first in CROCKFORD for second in CROCKFORD]


class RequestIds:
    """``req_<ULID>``: 48 bits of milliseconds (10 characters, encoded once per millisecond), then
    80 random bits (16 characters, 10 bits per table lookup), drawn as two 40-bit numbers: shifts
    of a machine-sized int are cheaper than of an 80-bit one. Sortable by time; an id is not a
    secret, so ``random``'s fast generator is enough for uniqueness (reseeded in forked children)."""

    def __init__(self) -> None:
        self._millisecond = -1
        self._prefix = ""

    def __call__(self) -> str:
        millisecond = time.time_ns() // 1_000_000
        if millisecond != self._millisecond:
            self._millisecond = millisecond
            self._prefix = "req_" + "".join(CROCKFORD[(millisecond >> shift) & 31] for shift in range(45, -1, -5))
        high, low = random.getrandbits(40), random.getrandbits(40)
        pairs = _PAIRS
        return "".join(
            (
                self._prefix,
                pairs[high >> 30],
                pairs[(high >> 20) & 1023],
                pairs[(high >> 10) & 1023],
                pairs[high & 1023],
                pairs[low >> 30],
                pairs[(low >> 20) & 1023],
                pairs[(low >> 10) & 1023],
                pairs[low & 1023],
            )
        )


new_request_id = RequestIds()


def log_access(
    request_id: str, method: str, path: str, status: int, duration_ms: float, token: str | None, remote: str | None
) -> None:
    if len(path) > LOGGED_PATH_CHARS:
        path = f"{path[:LOGGED_PATH_CHARS]}…(+{len(path) - LOGGED_PATH_CHARS})"
    access_log.line(
        f"{method} {path} {status}",
        {
            "requestId": request_id,
            "method": method,
            "path": path,
            "status": status,
            "durationMs": duration_ms,
            "token": token,
            "remote": remote,
        },
    )


# The methods counted by name; any other is counted as OTHER.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics:
    """Counts and times answered requests; label children are looked up once per combination of
    method, matched resource (labelled by its route template, never the raw path) and status, all
    bounded."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, AbstractResource | None, int], tuple[Counter, Histogram]] = {}

    def observe(self, request: web.BaseRequest, status: int, seconds: float) -> None:
        method = request.method
        if method not in METHODS:
            method = "OTHER"
        resource = matched_resource(request)
        key = (method, resource, status)
        children = self._children.get(key)
        if children is None:
            route = resource.canonical if resource is not None else "unmatched"
            children = (REQUESTS.labels(method, route, str(status)), DURATION.labels(method, route, str(status)))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


def matched_resource(request: web.BaseRequest) -> AbstractResource | None:
    """The resource the request's route matched, or None (no route matched, or not routed)."""
    match_info = matched(request)
    if match_info is None or match_info.http_exception is not None:
        return None
    return match_info.route.resource


request_metrics = RequestMetrics()


def request_context_middleware(
    *,
    metrics: bool,
    answer_failure: Callable[[web.Request, Exception], web.StreamResponse],
    answering: Callable[[web.Request, web.StreamResponse], None],
) -> Middleware:
    """The outermost middleware (``spacesvc.http.pipeline``); with ``metrics``, each answered
    request is also counted and timed. A failure below it is answered by ``answer_failure`` (the
    error envelope), which may raise it again; every answer is shown to ``answering`` before it
    is sent."""
    observe = request_metrics.observe if metrics else _not_observed

    @web.middleware
    async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Give every request an id, echo it in X-Request-ID, and log one line when it ends."""
        request_id = new_request_id()
        request[REQUEST_ID] = request_id
        started = time.perf_counter()
        status = 500
        try:
            try:
                response = await handler(request)
            except Exception as failure:
                response = answer_failure(request, failure)
            status = response.status
            response.headers["X-Request-ID"] = request_id
            answering(request, response)
            return response
        except ClientDisconnected:
            # not a server error: there is no one left to answer
            status = CLIENT_CLOSED_REQUEST
            return web.Response(status=CLIENT_CLOSED_REQUEST)
        finally:
            seconds = time.perf_counter() - started
            principal = request.get(PRINCIPAL)
            log_access(
                request_id,
                request.method,
                request.path,
                status,
                round(seconds * 1000, 2),
                principal.name if principal else None,
                request.remote,
            )
            observe(request, status, seconds)

    return request_context


def _not_observed(request: web.BaseRequest, status: int, seconds: float) -> None:
    pass
