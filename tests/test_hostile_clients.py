"""Hostile and broken clients against a real `spacesvc serve` (docs/guarantees.md): what aiohttp's parser
rejects still gets the envelope and an X-Request-ID, no header value reaches the log, slow and
idle clients are disconnected, and a client that hangs up is not a server error."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.api import REQUEST_ID, Tokens
from tests.support.cli import service_env
from tests.support.logs import log_lines
from tests.support.postgres import free_port
from tests.support.secrecy import assert_hidden
from tests.support.service import Serve

BOUND = 30.0  # docs/guarantees.md: a slow client is disconnected within this


@pytest.fixture
def service(database_url: str) -> Iterator[Serve]:
    env = service_env(
        database_url,
        SPACESVC_KEEPALIVE_TIMEOUT="2s",
    )
    server = Serve(env, free_port())
    yield server
    server.stop()


def exchange(port: int, raw: bytes, *, read_for: float = 5.0) -> bytes:
    """Send ``raw`` on a new connection and read until the server closes it (or ``read_for``)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(raw)
        sock.settimeout(read_for)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pass
    return received


def envelope(raw: bytes, status: int) -> dict:
    """The response is ``status`` with the JSON envelope and an X-Request-ID equal to its requestId."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].split()[1] == str(status), lines[0]
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)
    assert REQUEST_ID.match(error["requestId"]) and headers["x-request-id"] == error["requestId"]
    assert error["code"] == "VALIDATION_ERROR" and error["message"]
    return error


async def test_requests_the_parser_rejects_get_the_envelope_and_log_no_header(service: Serve, tokens: Tokens) -> None:
    token = await tokens.create("admin")
    rejected = {
        "a control character in Authorization": (
            b"GET /api/settings/spaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + token.encode()
            + b"\x01\r\n\r\n",
            400,
        ),
        "a DEL in Authorization": (
            b"GET /api/settings/spaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + token.encode()
            + b"\x7f\r\n\r\n",
            400,
        ),
        "an oversized URL": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431),
        "an oversized header": (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
        "a request line that is not HTTP": (b"GARBAGE\r\n\r\n", 400),
        "a zstd body": (
            b"PUT /api/settings/spaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + token.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Encoding: zstd\r\nContent-Length: 4\r\n\r\nxxxx",
            415,
        ),
    }
    for what, (raw, status) in rejected.items():
        error = envelope(exchange(service.port, raw), status)
        assert_hidden(json.dumps(error), token, "a" * 100, "b" * 100, where=f"the answer to {what}")
    stderr = service.stop()
    assert_hidden(stderr, token, "a" * 300, "b" * 100, where="the server log")
    assert [line for line in log_lines(stderr) if line["level"] == "error"] == []
    rejections = [line for line in log_lines(stderr) if line["logger"] == "spacesvc.access"]
    assert sorted(line["status"] for line in rejections) == sorted(status for _, status in rejected.values())


async def test_a_corrupt_gzip_body_is_a_400_not_a_500(service: Serve, tokens: Tokens) -> None:
    token = await tokens.create("admin")
    for encoding in (b"gzip", b"deflate"):
        body = b"\x1f\x8b\x08\x00 this is not compressed"
        raw = (
            b"PUT /api/settings/spaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Encoding: " + encoding + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        assert "Content-Encoding" in envelope(exchange(service.port, raw), 400)["message"]
    stderr = service.stop()
    assert [line for line in log_lines(stderr) if line["level"] == "error"] == []
    assert "Traceback" not in stderr


async def test_a_client_hanging_up_mid_body_is_not_a_server_error(service: Serve, tokens: Tokens) -> None:
    admin = await tokens.create("admin")
    viewer = await tokens.create("viewer", ("settings:read",))
    for token, key in ((admin, b""), (admin, b"Idempotency-Key: hang-1\r\n"), (viewer, b"Idempotency-Key: hang-2\r\n")):
        with socket.create_connection(("127.0.0.1", service.port)) as sock:
            sock.sendall(
                b"PUT /api/settings/spaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + token.encode()
                + b"\r\n"
                + key
                + b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"accessKey": '
            )
            time.sleep(0.3)
    await asyncio.sleep(0.5)
    stderr = service.stop()
    lines = log_lines(stderr)
    assert [line for line in lines if line["level"] == "error"] == []
    statuses = [line["status"] for line in lines if line["logger"] == "spacesvc.access" and line["method"] == "PUT"]
    assert sorted(statuses) == [403, 499, 499]  # the viewer is refused before its body is read


def closed_after(sock: socket.socket, started: float, limit: float) -> tuple[float, bytes]:
    """Read until the server closes ``sock``: (seconds since ``started``, what it sent); inf if it did not."""
    received = b""
    sock.settimeout(max(limit - (time.monotonic() - started), 0.1))
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return float("inf"), received
    except ConnectionResetError:
        pass
    return time.monotonic() - started, received


async def test_idle_connections_are_closed_after_the_keepalive_timeout_and_do_not_delay_others(
    service: Serve,
) -> None:
    idle = [socket.create_connection(("127.0.0.1", service.port)) for _ in range(1000)]
    started = time.monotonic()
    reply = exchange(service.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ")
    closed = [closed_after(sock, started, 10)[0] for sock in idle]
    assert max(closed) <= 2 + 3  # SPACESVC_KEEPALIVE_TIMEOUT=2s, and some slack for 1,000 sockets
    for sock in idle:
        sock.close()


async def test_slow_clients_are_disconnected_within_30s_and_others_are_served_meanwhile(
    database_url: str, tokens: Tokens
) -> None:
    token = await tokens.create("admin")
    server = Serve(service_env(database_url), free_port())
    try:
        slow_head = socket.create_connection(("127.0.0.1", server.port))
        slow_body = socket.create_connection(("127.0.0.1", server.port))
        started = time.monotonic()
        slow_head.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and the rest never comes
        slow_body.sendall(
            b"PUT /api/settings/spaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        for _ in range(5):  # meanwhile others are served at once
            reply = exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert reply.startswith(b"HTTP/1.1 200 ")
            await asyncio.sleep(1)
        head_closed, _ = closed_after(slow_head, started, BOUND + 10)
        body_closed, answer = closed_after(slow_body, started, BOUND + 10)
        assert head_closed <= BOUND + 1 and body_closed <= BOUND + 1
        assert "did not arrive" in envelope(answer, 408)["message"]
        slow_head.close()
        slow_body.close()
    finally:
        stderr = server.stop()
    assert_hidden(stderr, token, where="the server log")
    assert [line for line in log_lines(stderr) if line["level"] == "error"] == []
