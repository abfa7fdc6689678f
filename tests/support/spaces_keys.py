"""A loopback stand-in of DigitalOcean's Spaces Keys API, as its published API reference describes
it (routes, bodies, pagination, errors, rate-limit headers), whose keys are real: each one is an
IAM user with an access key and an inline policy on the moto server, so S3 enforces its grants.

- ``POST /v2/spaces/keys`` ``{"name", "grants": [{"bucket", "permission"}]}`` → 201
  ``{"key": {"name", "access_key", "secret_key", "grants", "created_at"}}``; ``permission`` is
  ``read``, ``readwrite``, ``fullaccess`` or ``""``; fullaccess mixed with scoped grants is 400.
- ``GET /v2/spaces/keys`` with ``page`` (default 1), ``per_page`` (default 20, at most 200),
  ``name``, ``bucket``, ``permission``, ``sort`` / ``sort_direction`` (default ``created_at``
  ``desc``) → ``{"keys": [...], "links": {"pages": {"first", "prev", "next", "last"}},
  "meta": {"total"}}``, the secret never shown again. The reference does not say how ``name``
  matches; here it is a substring match.
- ``GET`` → ``{"key": …}`` and ``DELETE`` → 204 on ``/v2/spaces/keys/{access_key}``.
- ``Authorization: Bearer <token>``; errors are ``{"id", "message"}`` (``unauthorized``,
  ``not_found``, ``too_many_requests``, ``bad_request``); every answer carries ``ratelimit-limit``,
  ``ratelimit-remaining`` and ``ratelimit-reset``.

A test can make it answer 429 the next N times (``throttle``) or answer slowly (``delay``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from tests.support.s3 import MotoS3

RATE_LIMIT = 5000
PERMISSIONS = ("read", "readwrite", "fullaccess", "")
# AWS's names, and the names moto's enforcement gives listing and HeadBucket, so a key lists and
# heads its buckets on moto as it would on Spaces
READ = ["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation", "s3:ListObjects", "s3:ListObjectsV2", "s3:HeadBucket"]
WRITE = ["s3:PutObject", "s3:DeleteObject"]


@dataclass
class StoredKey:
    name: str
    access_key: str
    grants: list[dict[str, str]]
    created_at: str
    user: str

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "access_key": self.access_key, "grants": self.grants, "created_at": self.created_at}


def policy(grants: list[dict[str, str]]) -> dict[str, Any] | None:
    """What S3 enforces for the grants: read → get and list, readwrite → also put and delete,
    fullaccess → everything; on the named buckets only (fullaccess: all)."""
    statements: list[dict[str, Any]] = []
    for grant in grants:
        bucket, permission = grant["bucket"], grant["permission"]
        if permission == "fullaccess":
            statements.append({"Effect": "Allow", "Action": "s3:*", "Resource": "*"})
        elif permission in ("read", "readwrite"):
            actions = READ + (WRITE if permission == "readwrite" else [])
            resources = [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]
            statements.append({"Effect": "Allow", "Action": actions, "Resource": resources})
    return {"Version": "2012-10-17", "Statement": statements} if statements else None


@dataclass
class Throttle:
    times: int
    retry_after: str | None
    reset_after: float


@dataclass
class SpacesKeysApi:
    """The stand-in, on 127.0.0.1 while entered. ``requests``: (method, path and query) of every
    request; ``waits``: for each request after a 429, the seconds since that 429."""

    moto: MotoS3
    token: str = field(repr=False)
    delay: float = 0.0
    url: str = ""
    keys: dict[str, StoredKey] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    _throttle: Throttle | None = None
    _throttled_at: float | None = None
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    # IAM user names stay unique on a moto server that outlives this stand-in
    _instance: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def throttle(self, times: int, *, retry_after: str | None = None, reset_after: float = 1.0) -> None:
        """Answer the next ``times`` requests 429, with ``retry-after`` if given and
        ``ratelimit-reset`` ``reset_after`` seconds from now (rounded up to a whole second)."""
        self._throttle = Throttle(times, retry_after, reset_after)

    async def __aenter__(self) -> SpacesKeysApi:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/v2/spaces/keys", self._create)
        app.router.add_get("/v2/spaces/keys", self._list)
        app.router.add_get("/v2/spaces/keys/{access_key}", self._get)
        app.router.add_delete("/v2/spaces/keys/{access_key}", self._delete)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    # -- the protocol -----------------------------------------------------------------------------

    def _rate_headers(self, remaining: int, reset: float) -> dict[str, str]:
        return {
            "ratelimit-limit": str(RATE_LIMIT),
            "ratelimit-remaining": str(remaining),
            "ratelimit-reset": str(math.ceil(reset)),
        }

    def _error(self, status: int, error_id: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response(
            {"id": error_id, "message": message},
            status=status,
            headers={**self._rate_headers(RATE_LIMIT - len(self.requests), time.time() + 3600), **(headers or {})},
        )

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        now = time.monotonic()
        if self._throttled_at is not None:
            self.waits.append(now - self._throttled_at)
            self._throttled_at = None
        if self.delay:
            await request.read()  # received whole, as a real API would before it works on it
            await asyncio.sleep(self.delay)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._error(401, "unauthorized", "Unable to authenticate you.")
        throttle = self._throttle
        if throttle is not None and throttle.times > 0:
            throttle.times -= 1
            self._throttled_at = now
            reset = time.time() + throttle.reset_after
            headers = self._rate_headers(0, reset)
            if throttle.retry_after is not None:
                headers["retry-after"] = throttle.retry_after
            return self._error(429, "too_many_requests", "API rate limit exceeded.", headers)
        try:
            response = await handler(request)
        except web.HTTPNotFound:
            return self._error(404, "not_found", "The resource you requested could not be found.")
        assert isinstance(response, web.StreamResponse)
        response.headers.update(self._rate_headers(RATE_LIMIT - len(self.requests), time.time() + 3600))
        return response

    async def _create(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return self._error(400, "bad_request", "the request body is not JSON.")
        name, grants = body.get("name") if isinstance(body, dict) else None, body.get("grants", [])
        if not isinstance(name, str) or not name or not isinstance(grants, list):
            return self._error(400, "bad_request", "name is required and grants must be a list.")
        if not all(
            isinstance(g, dict) and isinstance(g.get("bucket"), str) and g.get("permission") in PERMISSIONS
            for g in grants
        ):
            return self._error(400, "bad_request", "each grant needs a bucket and a permission.")
        permissions = {g["permission"] for g in grants}
        if "fullaccess" in permissions and permissions - {"fullaccess", ""}:
            return self._error(400, "bad_request", "cannot mix fullaccess permission with scoped permissions.")
        user = f"spaces-key-{self._instance}-{next(self._counter)}"
        access_key, secret_key = await asyncio.to_thread(self._make_user, user, grants)
        created_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        grants = [{"bucket": g["bucket"], "permission": g["permission"]} for g in grants]
        stored = StoredKey(name, access_key, grants, created_at, user)
        self.keys[access_key] = stored
        return web.json_response({"key": {**stored.public(), "secret_key": secret_key}}, status=201)

    def _make_user(self, user: str, grants: list[dict[str, str]]) -> tuple[str, str]:
        iam = self.moto.client("iam", self.moto.key_manager)
        iam.create_user(UserName=user)
        document = policy(grants)
        if document is not None:
            iam.put_user_policy(UserName=user, PolicyName="grants", PolicyDocument=json.dumps(document))
        created = iam.create_access_key(UserName=user)["AccessKey"]
        return created["AccessKeyId"], created["SecretAccessKey"]

    def _drop_user(self, stored: StoredKey) -> None:
        iam = self.moto.client("iam", self.moto.key_manager)
        iam.delete_access_key(UserName=stored.user, AccessKeyId=stored.access_key)
        if policy(stored.grants) is not None:
            iam.delete_user_policy(UserName=stored.user, PolicyName="grants")
        iam.delete_user(UserName=stored.user)

    async def _list(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            page = int(query.get("page", "1"))
            per_page = int(query.get("per_page", "20"))
        except ValueError:
            return self._error(400, "bad_request", "page and per_page must be integers.")
        if page < 1 or not 1 <= per_page <= 200:
            return self._error(400, "bad_request", "page must be at least 1 and per_page between 1 and 200.")
        keys = list(self.keys.values())
        if "name" in query:
            keys = [k for k in keys if query["name"] in k.name]
        if "bucket" in query:
            keys = [k for k in keys if any(g["bucket"] == query["bucket"] for g in k.grants)]
        if "permission" in query:
            keys = [k for k in keys if any(g["permission"] == query["permission"] for g in k.grants)]
        sort = query.get("sort", "created_at")
        if sort not in ("created_at", "name"):
            return self._error(400, "bad_request", "sort must be created_at or name.")
        keys.sort(key=lambda k: (getattr(k, sort), k.access_key), reverse=query.get("sort_direction", "desc") == "desc")
        last = max(1, math.ceil(len(keys) / per_page))
        shown = keys[(page - 1) * per_page : page * per_page]
        pages: dict[str, str] = {}

        def link(number: int) -> str:
            others = {k: v for k, v in query.items() if k != "page"}
            return f"{self.url}/v2/spaces/keys?{urlencode({**others, 'page': number})}"

        if page > 1:
            pages.update(first=link(1), prev=link(page - 1))
        if page < last:
            pages.update(last=link(last), next=link(page + 1))
        links = {"pages": pages} if pages else {}
        return web.json_response(
            {"keys": [k.public() for k in shown], "links": links, "meta": {"total": len(keys)}}, status=200
        )

    async def _get(self, request: web.Request) -> web.Response:
        stored = self.keys.get(request.match_info["access_key"])
        if stored is None:
            raise web.HTTPNotFound()
        return web.json_response({"key": stored.public()})

    async def _delete(self, request: web.Request) -> web.Response:
        stored = self.keys.pop(request.match_info["access_key"], None)
        if stored is None:
            raise web.HTTPNotFound()
        await asyncio.to_thread(self._drop_user, stored)
        return web.Response(status=204)
