"""One JSON log line per request; the secret and tokens never in a response, a log or the database."""

from __future__ import annotations

import asyncio
import json
import subprocess

import aiohttp
import asyncpg
from aiohttp.test_utils import TestClient

from tests.support.api import BODY, SPACES, Tokens, auth
from tests.support.cli import SPACESVC, service_env
from tests.support.logs import ServerLog
from tests.support.postgres import bin_dir_for_major, free_port
from tests.support.s3 import MotoS3
from tests.support.secrecy import SECRET, assert_hidden

ROTATED = SECRET + "-rotated"


async def exercise_every_route(client: TestClient, token: str) -> list[str]:
    """Drive the API through success and failure paths; returns every response (headers + body)."""
    headers = auth(token)
    calls = [
        client.put(SPACES, json=BODY, headers=headers),
        client.get(SPACES, headers=headers),
        client.patch(SPACES, json={"secretKey": ROTATED}, headers=headers),
        client.put(SPACES, json={**BODY, "secretKey": ROTATED * 9}, headers=headers),
        client.put(SPACES, json={**BODY, "region": "BAD", "secretKey": SECRET}, headers=headers),
        client.put(SPACES, json={**BODY, "version": 7}, headers=headers),
        client.put(SPACES, data=f'{{"secretKey": "{SECRET}"', headers={**headers, "Content-Type": "application/json"}),
        client.get(SPACES, headers=auth(token[:-2] + "xx")),
        client.get("/readyz"),
        client.get("/api/docs/openapi.json"),
    ]
    seen = []
    for call in calls:
        resp = await call
        seen.append(json.dumps(dict(resp.headers)) + (await resp.text()))
    return seen


async def test_the_secret_never_appears_in_responses_or_logs(
    client: TestClient, tokens: Tokens, server_log: ServerLog
) -> None:
    token = await tokens.create("admin")
    responses = await exercise_every_route(client, token)
    for text in [*responses, server_log.text]:
        assert_hidden(text, SECRET, ROTATED, token)
        assert "Bearer" not in text or "WWW-Authenticate" in text


async def test_one_structured_log_line_per_request(client: TestClient, admin: dict, server_log: ServerLog) -> None:
    resp = await client.put(SPACES, json=BODY, headers=admin)
    request_id = resp.headers["X-Request-ID"]
    lines = [json.loads(line) for line in server_log.lines]
    access = [line for line in lines if line.get("requestId") == request_id and line["logger"] == "spacesvc.access"]
    assert len(access) == 1
    line = access[0]
    assert (line["method"], line["path"], line["status"], line["token"]) == ("PUT", SPACES, 201, "admin-token")
    assert line["durationMs"] >= 0
    assert "Authorization" not in json.dumps(lines)


async def test_a_database_dump_holds_neither_the_secret_nor_any_token(
    client: TestClient, tokens: Tokens, database_url: str, conn: asyncpg.Connection
) -> None:
    token = await tokens.create("admin")
    await exercise_every_route(client, token)
    major = int(await conn.fetchval("SHOW server_version_num")) // 10000
    dump = subprocess.run(
        [str(bin_dir_for_major(major) / "pg_dump"), "--no-owner", database_url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "secret_ciphertexts" in dump and "api_tokens" in dump
    assert_hidden(dump, SECRET, ROTATED, token, where="pg_dump")


async def test_debug_logging_of_the_running_service_leaks_no_secret_or_signature(
    database_url: str, tokens: Tokens, s3: MotoS3
) -> None:
    token = await tokens.create("admin")
    port = free_port()
    env = service_env(
        database_url,
        SPACESVC_LOG_LEVEL="DEBUG",
        SPACESVC_SHUTDOWN_DELAY="0s",
    )
    server = subprocess.Popen(
        [SPACESVC, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(headers=auth(token)) as http:
            for _ in range(100):
                try:
                    async with http.get(f"{base}/healthz"):
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            key = s3.keys["full"]
            body = {"accessKey": key.access_key, "secretKey": key.secret_key, "region": "us-east-1", "endpoint": s3.url}
            async with http.put(f"{base}{SPACES}", json=body) as resp:
                assert resp.status == 201
            async with http.post(f"{base}/api/settings/spaces/test") as resp:
                assert (await resp.json())["success"] is True
    finally:
        server.terminate()
        _, log = server.communicate(timeout=30)
    assert '"level":"debug"' in log  # debug logging really was on
    assert_hidden(log, key.secret_key, token, where="the server log")
    for material in ("Signature", "AWS4-HMAC-SHA256", "Authorization"):
        assert material not in log


async def test_a_failing_tests_report_cannot_print_the_admin_token(admin: dict) -> None:
    """pytest prints a failing test's arguments: the headers fixture must not spell its token."""
    token = admin["Authorization"].removeprefix("Bearer ")
    assert token.startswith("sps_")
    assert_hidden(f"{admin!r} {admin!s} {[admin]}", token, where="the printed headers")
