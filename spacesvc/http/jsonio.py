"""JSON in and out: orjson responses, and request bodies read (within a bound) and parsed into an
object, or an ApiError."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from spacesvc.http.errors import ClientDisconnected, validation_error

# A body that has not arrived this long after the handler asked for it is a slow client's (with
# the server's lingering time after the answer, its connection ends within 30 s).
BODY_TIMEOUT = 25.0


def timestamp(moment: datetime) -> str:
    """A moment as JSON shows it here: UTC, milliseconds, ``Z`` (``2026-01-02T03:04:05.678Z``)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_response(data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON response of ``data``, or of ``bytes`` already rendered as JSON."""
    body = data if isinstance(data, bytes) else orjson.dumps(data)
    return web.Response(body=body, status=status, headers=headers, content_type="application/json")


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; anything else is a VALIDATION_ERROR (400/415/413)."""
    if request.content_type != "application/json":
        raise validation_error(
            "The request body must be JSON (Content-Type: application/json).",
            status=415,
            hint="Send the header Content-Type: application/json.",
        )
    raw = await read_body(request)
    if not raw.strip():
        raise validation_error("The request body is empty; a JSON object is expected.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise validation_error(f"The request body is not valid JSON: {error.msg} at position {error.pos}.") from None
    if not isinstance(body, dict):
        raise validation_error(
            f"The request body must be a JSON object, not {type(body).__name__ if body is not None else 'null'}."
        )
    return body


async def read_body(request: web.Request) -> bytes:
    """The whole request body (aiohttp raises 413 past client_max_size), read at most once.

    A body that does not arrive within BODY_TIMEOUT is 408 and the connection is closed; one that
    cannot be decoded is 400; a client that hangs up mid-body raises ClientDisconnected.
    """
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            return await request.read()
    except TimeoutError:
        raise validation_error(
            f"The request body did not arrive within {BODY_TIMEOUT:g}s.", status=408, close_connection=True
        ) from None
    except RequestPayloadError:
        raise validation_error(
            "The request body could not be read as sent: a corrupt Content-Encoding, "
            "or a body that does not match its Content-Length.",
            close_connection=True,
        ) from None
    except ConnectionError:
        raise ClientDisconnected() from None
