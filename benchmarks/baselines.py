"""The two baselines the read and write figures are measured against (the README's hot-path table):

- ``canned``: a bare aiohttp handler on uvloop answering a fixed JSON body as long as spacesvc's
  GET /api/settings/spaces body: the framework's limit on this machine.
- ``naive``: a plain aiohttp + asyncpg handler: GET reads the configuration row, PUT updates it with
  one UPDATE, no authentication, no logging, no validation.

``python -m benchmarks.baselines canned|naive --port PORT [--database-url URL]`` serves one of them.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import asyncpg
import orjson
import uvloop
from aiohttp import web

# As long as spacesvc's answer for the benchmark's configuration (within a few bytes).
CANNED = orjson.dumps(
    {
        "configured": True,
        "config": {
            "id": "00000000-0000-0000-0000-000000000000",
            "accessKey": "BENCHKEY",
            "region": "fra1",
            "endpoint": "fra1.digitaloceanspaces.com",
            "buckets": ["backups"],
            "hasSecretKey": True,
            "secretBackend": "db",
            "version": 1,
            "createdAt": "2026-11-30T00:00:00.000Z",
            "updatedAt": "2026-11-30T00:00:00.000Z",
            "updatedBy": "bench",
            "enabledEnvironments": [],
        },
    }
)


def canned_app() -> web.Application:
    async def get(request: web.Request) -> web.Response:
        return web.Response(body=CANNED, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/settings/spaces", get)
    return app


def naive_app(database_url: str) -> web.Application:
    pool_key = web.AppKey("pool", asyncpg.Pool)

    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        app[pool_key] = await asyncpg.create_pool(database_url, min_size=2, max_size=10)
        yield
        await app[pool_key].close()

    async def get(request: web.Request) -> web.Response:
        row = await request.app[pool_key].fetchrow("SELECT access_key, region, buckets, version FROM spaces_config")
        return web.Response(body=orjson.dumps(dict(row) if row else None), content_type="application/json")

    async def put(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        version = await request.app[pool_key].fetchval(
            "UPDATE spaces_config SET access_key = $1, region = $2, version = version + 1 RETURNING version",
            body["accessKey"],
            body.get("region") or "fra1",
        )
        return web.Response(body=orjson.dumps({"version": version}), content_type="application/json")

    app = web.Application()
    app.cleanup_ctx.append(pool_ctx)
    app.router.add_get("/api/settings/spaces", get)
    app.router.add_put("/api/settings/spaces", put)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("which", choices=["canned", "naive"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    app = canned_app() if args.which == "canned" else naive_app(args.database_url)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
