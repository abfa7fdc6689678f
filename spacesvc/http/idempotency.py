"""``Idempotency-Key`` on PUT, PATCH, DELETE and POST (SPEC §4), kept in PostgreSQL for every replica.

A key is scoped to the token. The first request claims it (``in_flight``); its 2xx response is kept
24 h and replayed for the same key and body; another body is IDEMPOTENCY_KEY_REUSED; a retry while
the first is in flight is CONFLICT; a non-2xx result releases the key. A claim left in flight by
a crashed request is taken over after ``idempotency_in_flight_seconds``. The fingerprint is an
HMAC of method, path and body under a key of the service's own, so nothing stored reveals a body.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import orjson
from aiohttp import web

from spacesvc import postgres
from spacesvc.errors import Unavailable
from spacesvc.http.errors import ApiError, ErrorCode, validation_error
from spacesvc.http.types import Handler
from spacesvc.typedefs import FINGERPRINT_KEY, PRINCIPAL, SETTINGS

log = logging.getLogger("spacesvc.idempotency")

HEADER = "Idempotency-Key"
METHODS = frozenset({"PUT", "PATCH", "DELETE", "POST"})
KEY_FORMAT = re.compile(r"^[\x20-\x7e]{1,255}$")
RETENTION = timedelta(hours=24)
REPLAYED_HEADERS = ("Content-Type", "ETag")
CLEANUP_INTERVAL_SECONDS = 600.0

SELECT_FINGERPRINT_KEY = "SELECT key FROM service_keys WHERE name = 'idempotency-fingerprint'"
INSERT_FINGERPRINT_KEY = """
INSERT INTO service_keys (name, key) VALUES ('idempotency-fingerprint', $1) ON CONFLICT (name) DO NOTHING
"""
CLAIM = """
INSERT INTO idempotency_keys (token_id, key, fingerprint, state, locked_until)
VALUES ($1, $2, $3, 'in_flight', now() + $4::interval)
ON CONFLICT (token_id, key) DO UPDATE
SET fingerprint = EXCLUDED.fingerprint, state = 'in_flight', locked_until = EXCLUDED.locked_until,
    status = NULL, headers = NULL, body = NULL, created_at = now()
WHERE idempotency_keys.created_at < now() - $5::interval
   OR (idempotency_keys.state = 'in_flight' AND idempotency_keys.locked_until < now()
       AND idempotency_keys.fingerprint = EXCLUDED.fingerprint)
RETURNING true
"""
SELECT_RECORD = """
SELECT fingerprint, state, status, headers, body,
       greatest(extract(epoch FROM locked_until - now()), 0) AS locked_for
FROM idempotency_keys WHERE token_id = $1 AND key = $2
"""
COMPLETE = """
UPDATE idempotency_keys SET state = 'done', status = $3, headers = $4, body = $5
WHERE token_id = $1 AND key = $2 AND state = 'in_flight'
"""
RELEASE = "DELETE FROM idempotency_keys WHERE token_id = $1 AND key = $2 AND state = 'in_flight'"
DELETE_EXPIRED = "DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval"


@dataclass(frozen=True)
class Replay:
    status: int
    headers: dict[str, str]
    body: bytes

    def response(self) -> web.Response:
        return web.Response(status=self.status, body=self.body, headers={**self.headers, "Idempotent-Replayed": "true"})


class FingerprintKey:
    """The service's HMAC key, created once in PostgreSQL (shared by replicas) and cached."""

    def __init__(self) -> None:
        self._key: bytes | None = None

    async def get(self, conn: asyncpg.Connection) -> bytes:
        if self._key is None:
            await conn.execute(INSERT_FINGERPRINT_KEY, os.urandom(32))
            self._key = bytes(await conn.fetchval(SELECT_FINGERPRINT_KEY))
        return self._key


def fingerprint(key: bytes, request: web.Request, body: bytes) -> bytes:
    message = request.method.encode() + b"\n" + request.path_qs.encode() + b"\n" + body
    return hmac.new(key, message, hashlib.sha256).digest()


async def claim(
    conn: asyncpg.Connection, token_id: str, key: str, print_: bytes, in_flight: timedelta
) -> Replay | None:
    """Claim ``key`` for this request (None), or answer from what an earlier request left."""
    for _ in range(3):  # the record may vanish between the two statements when its owner fails
        if await conn.fetchval(CLAIM, token_id, key, print_, in_flight, RETENTION):
            return None
        record = await conn.fetchrow(SELECT_RECORD, token_id, key)
        if record is None:
            continue
        if not hmac.compare_digest(bytes(record["fingerprint"]), print_):
            raise ApiError(
                ErrorCode.IDEMPOTENCY_KEY_REUSED,
                "This Idempotency-Key was already used with a different request.",
                field=HEADER,
                hint="Use a new Idempotency-Key for a different request body.",
            )
        if record["state"] == "done":
            return Replay(record["status"], orjson.loads(record["headers"]), bytes(record["body"]))
        retry_after = max(math.ceil(float(record["locked_for"])), 1)
        raise ApiError(
            ErrorCode.CONFLICT,
            "A request with this Idempotency-Key is still in progress.",
            field=HEADER,
            hint="Retry after it finishes; its result will then be replayed.",
            headers={"Retry-After": str(min(retry_after, 5))},
        )
    raise ApiError(ErrorCode.CONFLICT, "The Idempotency-Key is contended; retry.", headers={"Retry-After": "1"})


@web.middleware
async def idempotency_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    key = request.headers.get(HEADER)
    principal = request.get(PRINCIPAL)
    if key is None or request.method not in METHODS or principal is None:
        return await handler(request)
    if not KEY_FORMAT.match(key):
        raise validation_error(
            f"{HEADER} must be 1 to 255 printable ASCII characters.", field=HEADER, hint="A UUID works well."
        )
    body = await request.read()
    app = request.app
    in_flight = timedelta(seconds=app[SETTINGS].idempotency_in_flight_seconds)
    async with postgres.acquire(app) as conn:
        print_ = fingerprint(await app[FINGERPRINT_KEY].get(conn), request, body)
        replay = await claim(conn, principal.token_id, key, print_, in_flight)
    if replay is not None:
        return replay.response()
    try:
        response = await handler(request)
    except BaseException:
        await asyncio.shield(_finish(app, principal.token_id, key, None))
        raise
    await asyncio.shield(_finish(app, principal.token_id, key, response))
    return response


async def _finish(app: web.Application, token_id: str, key: str, response: web.StreamResponse | None) -> None:
    """Keep a 2xx response for replay; release the key after anything else."""
    try:
        async with postgres.acquire(app) as conn:
            if response is not None and 200 <= response.status < 300 and isinstance(response, web.Response):
                headers = {name: response.headers[name] for name in REPLAYED_HEADERS if name in response.headers}
                await conn.execute(
                    COMPLETE, token_id, key, response.status, orjson.dumps(headers).decode(), response.body
                )
            else:
                await conn.execute(RELEASE, token_id, key)
    except Unavailable:
        # The result stands; the claim stays in flight until the takeover bound.
        log.warning("could not record the outcome of an Idempotency-Key request")


async def cleanup_ctx(app: web.Application) -> AsyncIterator[None]:
    """Delete records past their 24 h retention, every few minutes."""
    app[FINGERPRINT_KEY] = FingerprintKey()

    async def sweep() -> None:
        while True:
            await asyncio.sleep(CLEANUP_INTERVAL_SECONDS)
            try:
                async with postgres.acquire(app) as conn:
                    await delete_expired(conn)
            except Unavailable:
                log.warning("idempotency cleanup skipped: the database is unavailable")

    task = asyncio.create_task(sweep(), name="idempotency-cleanup")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def delete_expired(conn: asyncpg.Connection) -> int:
    result = await conn.execute(DELETE_EXPIRED, RETENTION)
    return int(result.split()[-1])
