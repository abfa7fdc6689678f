"""``Idempotency-Key`` on PUT, PATCH, DELETE and POST (docs/api.md), kept in PostgreSQL for every
replica.

A key is scoped to the token. The first request claims it (``in_flight``); its 2xx response is kept
24 h and replayed for the same key and body; another body is IDEMPOTENCY_KEY_REUSED; a retry while
the first is in flight is CONFLICT, with a Retry-After that is the claim's remaining lease; a
non-2xx result releases the key. A running request renews its claim's lease
(``idempotency_lease_seconds``); a claim that is no longer renewed was left by a process that
died, and a retry takes it over once the lease has run out. The fingerprint is an HMAC of
method, path and body under a key of the service's own, so nothing stored reveals a body.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import orjson
from aiohttp import web

from spacesvc import postgres
from spacesvc.errors import Unavailable
from spacesvc.http.errors import ApiError, ErrorCode, validation_error
from spacesvc.http.jsonio import read_body
from spacesvc.http.request_context import PRINCIPAL
from spacesvc.instruments import IDEMPOTENT_REPLAYS
from spacesvc.settings import SETTINGS

log = logging.getLogger("spacesvc.idempotency")

HEADER = "Idempotency-Key"
KEY_FORMAT = re.compile(r"^[\x20-\x7e]{1,255}$")
RETENTION = timedelta(hours=24)
REPLAYED_HEADERS = ("Content-Type", "ETag")
# A retry of the same request carries the same conditions; other conditions make another request.
FINGERPRINTED_HEADERS = ("If-Match", "If-None-Match")

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
RENEW = """
UPDATE idempotency_keys SET locked_until = now() + $3::interval
WHERE token_id = $1 AND key = $2 AND state = 'in_flight'
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
    """The request as a retry repeats it: method, path, the conditions it carries, and its body."""
    conditions = "\n".join(request.headers.get(name, "") for name in FINGERPRINTED_HEADERS)
    message = f"{request.method}\n{request.path_qs}\n{conditions}\n".encode() + body
    return hmac.new(key, message, hashlib.sha256).digest()


async def claim(conn: asyncpg.Connection, token_id: str, key: str, print_: bytes, lease: timedelta) -> Replay | None:
    """Claim ``key`` for this request (None), or answer from what an earlier request left."""
    for _ in range(3):  # the record may vanish between the two statements when its owner fails
        if await conn.fetchval(CLAIM, token_id, key, print_, lease, RETENTION):
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
            headers={"Retry-After": str(retry_after)},
        )
    raise ApiError(ErrorCode.CONFLICT, "The Idempotency-Key is contended; retry.", headers={"Retry-After": "1"})


async def run_idempotently(
    request: web.Request, handle: Callable[[], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Run ``handle`` once per Idempotency-Key: replay its 2xx result for a retry of the same request.

    Called by a handler once the request is authorized and its headers are valid, so only a caller
    allowed to make the request has its body read and a key claimed, and a malformed header is a
    400 however often it is retried.
    """
    key = request.headers.get(HEADER)
    if key is None:
        return await handle()
    if not KEY_FORMAT.match(key):
        raise validation_error(
            f"{HEADER} must be 1 to 255 printable ASCII characters.", field=HEADER, hint="A UUID works well."
        )
    principal = request[PRINCIPAL]
    body = await read_body(request)
    app = request.app
    lease = timedelta(seconds=app[SETTINGS].idempotency_lease_seconds)
    async with postgres.acquire(app) as conn:
        print_ = fingerprint(await app[FINGERPRINT_KEY].get(conn), request, body)
        replay = await claim(conn, principal.token_id, key, print_, lease)
    if replay is not None:
        IDEMPOTENT_REPLAYS.inc()
        return replay.response()
    renewal = asyncio.create_task(_keep_claim(app, principal.token_id, key, lease), name="idempotency-lease")
    try:
        response = await handle()
    except BaseException:
        renewal.cancel()
        await asyncio.shield(_finish(app, principal.token_id, key, None))
        raise
    renewal.cancel()
    await asyncio.shield(_finish(app, principal.token_id, key, response))
    return response


async def _keep_claim(app: web.Application, token_id: str, key: str, lease: timedelta) -> None:
    """Renew the claim's lease while its request runs: a claim that stops being renewed was left by
    a process that died, and is taken over once its lease runs out."""
    while True:
        await asyncio.sleep(lease.total_seconds() / 3)
        try:
            async with postgres.acquire(app) as conn:
                await conn.execute(RENEW, token_id, key, lease)
        except Unavailable:
            log.warning("could not renew an Idempotency-Key claim; a retry may take it over")


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


FINGERPRINT_KEY: web.AppKey[FingerprintKey] = web.AppKey("idempotency_fingerprint_key")


async def fingerprint_key_ctx(app: web.Application) -> AsyncIterator[None]:
    """The service's fingerprint key, read from PostgreSQL on first use and kept for the app's life."""
    app[FINGERPRINT_KEY] = FingerprintKey()
    yield


async def delete_expired(conn: asyncpg.Connection) -> int:
    result = await conn.execute(DELETE_EXPIRED, RETENTION)
    return int(result.split()[-1])
