"""What the service's calls to an S3 endpoint may do: no redirects, no link-local / unspecified /
multicast address, bounded in time, size and number, and audited. Misbehaving endpoints are
loopback stand-ins; addresses that must be refused are refused before any socket is opened."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestClient

from spacesvc.errors import ConfigError, InvalidInput
from spacesvc.s3 import MAX_OUTBOUND, S3Client, Target
from spacesvc.settings import Settings
from tests.support.api import AUDIT, BUCKETS, SPACES, TEST, MakeClient, assert_envelope
from tests.support.s3 import MotoS3, StandIn, list_buckets_xml
from tests.support.secrecy import assert_hidden

SECRET = "stand-in-secret-key-0123456789"


def proposed(endpoint: str, buckets: list[str] | None = None) -> dict:
    return {
        "accessKey": "AKIDSTANDIN",
        "secretKey": SECRET,
        "region": "us-east-1",
        "endpoint": endpoint,
        "buckets": buckets or [],
    }


async def test_a_redirect_is_a_failure_naming_the_status_and_is_never_followed(client: TestClient, admin: dict) -> None:
    async def elsewhere(request: web.Request) -> web.Response:
        return web.Response(body=list_buckets_xml(["reflected-bucket"]), content_type="application/xml")

    async with StandIn(elsewhere) as second:

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(second.url + request.path)

        async with StandIn(redirect) as first:
            resp = await client.post(TEST, json=proposed(first.url), headers=admin)
            body = await assert_envelope(resp, 400, "VALIDATION_ERROR")
            assert "307" in body["error"] and "reflected-bucket" not in await resp.text()
            await client.put(SPACES, json=proposed(first.url), headers=admin)
            body = await assert_envelope(await client.get(BUCKETS, headers=admin), 503, "SERVICE_UNAVAILABLE")
            assert "307" in body["message"]
            assert len(first.requests) == 2 and second.requests == []


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://169.254.169.254",
        "http://[fe80::1]:9000",
        "http://0.0.0.0:9000",
        "http://[::]:9000",
        "http://224.0.0.1",
        "http://[ff02::1]",
        "http://[::ffff:169.254.169.254]",
    ],
)
async def test_link_local_unspecified_and_multicast_endpoints_are_refused(
    client: TestClient, admin: dict, endpoint: str
) -> None:
    """Refused by the address check itself: no connection is attempted (none could be made here)."""
    started = time.monotonic()
    resp = await client.post(TEST, json=proposed(endpoint, ["some-bucket"]), headers=admin)
    body = await assert_envelope(resp, 400, "VALIDATION_ERROR")
    assert body["field"] == "endpoint" and "SPACESVC_OUTBOUND_ALLOW" in body["hint"]
    assert time.monotonic() - started < 2


class MetadataDns(AbstractResolver):
    """A DNS stand-in: every name resolves to the cloud metadata address."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            {
                "hostname": host,
                "host": "169.254.169.254",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
        ]

    async def close(self) -> None:
        pass


async def test_a_name_that_resolves_to_a_link_local_address_is_refused_after_resolution() -> None:
    dns = MetadataDns()
    s3 = S3Client(resolver=dns)
    target = Target("http://metadata.example.internal", "us-east-1", "AKID", SECRET)
    try:
        with pytest.raises(InvalidInput) as refused:
            await s3.list_buckets(target)
        with pytest.raises(InvalidInput) as refused_too:
            await s3.head_buckets(target, ["some-bucket", "other-bucket"])
    finally:
        await s3.close()
    assert dns.asked[0] == "metadata.example.internal"
    for error in (refused.value, refused_too.value):
        assert error.field == "endpoint" and "link-local" in error.message


async def test_spacesvc_outbound_allow_narrows_where_the_service_connects(
    make_client: MakeClient, settings: Settings, admin: dict, s3: MotoS3
) -> None:
    key = s3.keys["full"]
    body = {**proposed(s3.url), "accessKey": key.access_key, "secretKey": key.secret_key}
    narrowed = await make_client(settings.with_changes(outbound_allow=("10.0.0.0/8", "minio.internal")))
    refused = await assert_envelope(await narrowed.post(TEST, json=body, headers=admin), 400, "VALIDATION_ERROR")
    assert refused["field"] == "endpoint" and "SPACESVC_OUTBOUND_ALLOW" in refused["message"]
    allowed = await make_client(settings.with_changes(outbound_allow=("127.0.0.0/8",)))
    resp = await allowed.post(TEST, json=body, headers=admin)
    assert resp.status == 200 and (await resp.json())["success"] is True


def test_spacesvc_outbound_allow_is_read_from_the_environment(database_url: str) -> None:
    env = {"SPACESVC_DATABASE_URL": database_url, "SPACESVC_ENCRYPTION_KEYS": "k1:" + "A" * 43 + "="}
    parsed = Settings.from_env({**env, "SPACESVC_OUTBOUND_ALLOW": "minio.internal, 10.0.0.0/8,fd00::/8"})
    assert parsed.outbound_allow == ("minio.internal", "10.0.0.0/8", "fd00::/8")
    with pytest.raises(ConfigError, match="SPACESVC_OUTBOUND_ALLOW"):
        Settings.from_env({**env, "SPACESVC_OUTBOUND_ALLOW": "http://minio:9000"})


async def test_an_answer_over_one_mib_is_a_failure_not_a_bigger_buffer(client: TestClient, admin: dict) -> None:
    async def flood(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()  # no Content-Length: only reading tells the size
        await response.prepare(request)
        for _ in range(40):
            await response.write(b"<" * 65536)
        await response.write_eof()
        return response

    async with StandIn(flood) as endpoint:
        body = await assert_envelope(
            await client.post(TEST, json=proposed(endpoint.url), headers=admin), 400, "VALIDATION_ERROR"
        )
        assert "larger than 1 MiB" in body["error"]


async def test_discovered_names_that_are_not_bucket_names_are_dropped(client: TestClient, admin: dict) -> None:
    names = ["good-bucket", "Bad_Name", "<script>", "ab", "xn--bucket", "192.168.1.1", "also.good"]

    async def listing(request: web.Request) -> web.Response:
        return web.Response(body=list_buckets_xml(names), content_type="application/xml")

    async with StandIn(listing) as endpoint:
        await client.put(SPACES, json=proposed(endpoint.url), headers=admin)
        body = await (await client.get(BUCKETS, headers=admin)).json()
        assert body == {"buckets": ["also.good", "good-bucket"], "source": "discovered"}


async def test_a_listing_is_reused_for_ten_seconds_per_configuration_version(client: TestClient, admin: dict) -> None:
    async def listing(request: web.Request) -> web.Response:
        return web.Response(body=list_buckets_xml(["one-bucket"]), content_type="application/xml")

    async with StandIn(listing) as endpoint:
        await client.put(SPACES, json=proposed(endpoint.url), headers=admin)
        for _ in range(3):
            assert (await (await client.get(BUCKETS, headers=admin)).json())["buckets"] == ["one-bucket"]
        assert len(endpoint.requests) == 1
        await client.patch(SPACES, json={"region": "eu-west-1"}, headers=admin)  # a new version
        await client.get(BUCKETS, headers=admin)
        assert len(endpoint.requests) == 2


async def test_an_endpoint_that_trickles_its_answer_is_cut_at_the_ten_second_deadline(
    client: TestClient, viewer: dict, admin: dict
) -> None:
    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(60):
            await response.write(b" ")
            await asyncio.sleep(3)
        return response

    async with StandIn(trickle) as endpoint:
        await client.put(SPACES, json=proposed(endpoint.url), headers=admin)
        started = time.monotonic()
        body = await assert_envelope(await client.get(BUCKETS, headers=viewer), 503, "SERVICE_UNAVAILABLE")
        assert 9 < time.monotonic() - started < 15
        assert "10s deadline" in body["message"]


async def test_at_most_sixteen_outbound_calls_run_at_once(client: TestClient, admin: dict) -> None:
    running = 0
    most = 0

    async def slow_head(request: web.Request) -> web.Response:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.4)
        running -= 1
        return web.Response()

    buckets = [f"bucket-{n:02d}" for n in range(24)]
    async with StandIn(slow_head) as endpoint:
        resp = await client.post(TEST, json=proposed(endpoint.url, buckets), headers=admin)
        assert (await resp.json())["buckets"] == buckets
    assert most == MAX_OUTBOUND


async def test_connection_tests_and_discoveries_are_audited_without_the_secret(
    client: TestClient, admin: dict, s3: MotoS3
) -> None:
    key = s3.keys["full"]
    saved = {**proposed(s3.url), "accessKey": key.access_key, "secretKey": key.secret_key}
    await client.put(SPACES, json=saved, headers=admin)
    await client.post(TEST, headers=admin)
    await client.get(BUCKETS, headers=admin)
    await client.post(TEST, json={**saved, "secretKey": "wrong-secret-value"}, headers=admin)
    # refused before any socket: the address check answers for a link-local endpoint
    metadata = {**saved, "endpoint": "http://169.254.169.254", "secretKey": "wrong-secret-value"}
    assert (await client.post(TEST, json=metadata, headers=admin)).status == 400
    resp = await client.get(AUDIT, headers=admin)
    text = await resp.text()
    entries = (await resp.json())["entries"]
    tested = [e for e in entries if e["action"] == "connection.tested"]
    discovered = [e for e in entries if e["action"] == "buckets.discovered"]
    assert [e["details"]["outcome"] for e in tested] == ["refused", "failure", "success"]
    assert tested[0]["details"]["endpoint"] == "http://169.254.169.254"
    tested = tested[1:]
    assert tested[0]["details"]["saved"] is False and tested[1]["details"]["saved"] is True
    assert all(e["actor"] == "admin-token" and e["details"]["endpoint"] == s3.url for e in tested + discovered)
    assert len(discovered) == 1 and discovered[0]["details"]["outcome"] == "success"
    assert_hidden(text, key.secret_key, where="the audit trail")
    assert_hidden(text, "wrong-secret-value", where="the audit trail")
