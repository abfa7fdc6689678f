"""The S3 client: talking to the configured S3-compatible endpoint for the connection test and
bucket discovery.

Requests are signed (SigV4) by aiobotocore: botocore's own signing and error parsing, natively
async on aiohttp like the rest of the service, so a hung endpoint costs a cancellable coroutine
rather than a stuck thread. Every call is bounded: connect and read timeouts, no retries, at most
``MAX_CONCURRENT_CHECKS`` buckets at once, and one deadline for the whole test.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from aiohttp import web
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
    SSLError,
)

from spacesvc.errors import InvalidInput

log = logging.getLogger("spacesvc.s3")

CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 5.0
TEST_DEADLINE = 9.0
MAX_CONCURRENT_CHECKS = 8


@dataclass(frozen=True)
class Target:
    """Where and as whom to connect. ``repr`` leaves the secret out."""

    endpoint: str
    region: str
    access_key: str
    secret_key: str = field(repr=False)


@dataclass
class TestReport:
    success: bool
    message: str
    buckets: list[str]
    failures: dict[str, str]
    scoped_key: bool = False
    hint: str | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "success": self.success,
            "message": self.message,
            "buckets": self.buckets,
            "failedBuckets": sorted(self.failures),
            "failures": [{"bucket": name, "reason": reason} for name, reason in sorted(self.failures.items())],
            "scopedKey": self.scoped_key,
        }
        if self.hint:
            body["hint"] = self.hint
        return body


def endpoint_url(endpoint: str) -> str:
    """A configured endpoint as a URL: a bare host (optional :port) means https."""
    return endpoint.rstrip("/") if "://" in endpoint else f"https://{endpoint}"


def error_code(error: ClientError) -> str:
    """The S3 error code of an answer (``AccessDenied``, ``NoSuchBucket``, or the HTTP status)."""
    return str(error.response.get("Error", {}).get("Code", ""))


def is_scoped_key(error: ClientError) -> bool:
    """An AccessDenied on ListBuckets: the key is valid but limited to certain buckets."""
    return error_code(error) == "AccessDenied"


def reason(error: BaseException) -> str:
    """Why a call failed, for people: never the exception text, which may quote the request."""
    if isinstance(error, ClientError):
        code = error_code(error)
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("404", "NoSuchBucket"):
            return "the bucket does not exist"
        if code in ("SignatureDoesNotMatch",):
            return "the secret key does not match the access key"
        if code in ("InvalidAccessKeyId",):
            return "the access key is not known to the endpoint"
        if code in ("403", "AccessDenied", "AllAccessDisabled"):
            return "access denied: wrong credentials, or no permission on this bucket"
        if code in ("301", "PermanentRedirect", "AuthorizationHeaderMalformed"):
            return "the bucket is in another region or behind another endpoint"
        return f"the endpoint answered HTTP {status} ({code or 'no error code'})"
    if isinstance(error, (ConnectTimeoutError, asyncio.TimeoutError)):
        return f"the endpoint did not accept a connection within {CONNECT_TIMEOUT:g}s"
    if isinstance(error, ReadTimeoutError):
        return f"the endpoint did not answer within {READ_TIMEOUT:g}s"
    if isinstance(error, SSLError):
        return "the TLS handshake with the endpoint failed (certificate or protocol)"
    if isinstance(error, EndpointConnectionError):
        return "cannot connect to the endpoint (refused, or the host does not resolve)"
    return f"the request failed ({type(error).__name__})"


class S3Client:
    """Creates short-lived S3 clients for a target; one per app (the session loads models once)."""

    def __init__(self) -> None:
        self._session = AioSession()
        self._config = AioConfig(
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            retries={"total_max_attempts": 1},
            s3={"addressing_style": "path"},
            signature_version="s3v4",
        )

    @asynccontextmanager
    async def s3(self, target: Target) -> AsyncIterator[Any]:
        """A client for ``target``; one that cannot be built from its fields is the caller's InvalidInput."""
        async with AsyncExitStack() as stack:
            try:
                client = await stack.enter_async_context(
                    self._session.create_client(
                        "s3",
                        endpoint_url=endpoint_url(target.endpoint),
                        region_name=target.region,
                        aws_access_key_id=target.access_key,
                        aws_secret_access_key=target.secret_key,
                        config=self._config,
                    )
                )
            except Exception as error:  # botocore's construction errors quote the input: name only the kind
                raise InvalidInput(
                    f"An S3 client cannot be built for this endpoint and region ({type(error).__name__}).",
                    hint="Check the endpoint (a host or an http(s) URL) and the region.",
                ) from None
            yield client

    async def list_buckets(self, target: Target) -> list[str]:
        """The buckets the key can list; AccessDenied raises ClientError (a bucket-scoped key)."""
        async with self.s3(target) as client:
            response = await client.list_buckets()
        return sorted(bucket["Name"] for bucket in response.get("Buckets", []))

    async def test(self, target: Target, buckets: list[str]) -> TestReport:
        """HeadBucket on each configured bucket, or ListBuckets when none are configured."""
        where = endpoint_url(target.endpoint)
        if buckets:
            return await self._head_buckets(target, buckets, where)
        try:
            async with asyncio.timeout(TEST_DEADLINE):
                return await self._list(target, where)
        except TimeoutError:
            return TestReport(False, f"{where} did not answer within {TEST_DEADLINE:g}s.", [], {})

    async def _head_buckets(self, target: Target, buckets: list[str], where: str) -> TestReport:
        limit = asyncio.Semaphore(MAX_CONCURRENT_CHECKS)
        failures: dict[str, str] = {}
        async with self.s3(target) as client:

            async def check(bucket: str) -> None:
                async with limit:
                    try:
                        await client.head_bucket(Bucket=bucket)
                    except (TimeoutError, ClientError, BotoCoreError) as error:
                        failures[bucket] = reason(error)

            tasks = {asyncio.create_task(check(bucket)): bucket for bucket in buckets}
            _, unfinished = await asyncio.wait(tasks, timeout=TEST_DEADLINE)
            for task in unfinished:
                task.cancel()
                failures[tasks[task]] = f"not checked within the test's {TEST_DEADLINE:g}s"
            await asyncio.gather(*unfinished, return_exceptions=True)
        reachable = [bucket for bucket in buckets if bucket not in failures]
        summary = f"Access to {len(reachable)}/{len(buckets)} buckets."
        if not reachable:
            return TestReport(
                False,
                f"Could not access any configured bucket at {where}. {summary}",
                reachable,
                failures,
                hint="Each entry of failures says why; check the bucket names, the region and the key's permissions.",
            )
        # as BRIDGEPORT: the credentials work when at least one configured bucket is accessible
        return TestReport(
            True,
            f"Connected. {summary}",
            reachable,
            failures,
            hint="Each entry of failures says why a bucket failed." if failures else None,
        )

    async def _list(self, target: Target, where: str) -> TestReport:
        try:
            found = await self.list_buckets(target)
        except ClientError as error:
            if is_scoped_key(error):
                return TestReport(
                    True,
                    f"Connected to {where}: the key is valid but may not list buckets (a bucket-scoped key).",
                    [],
                    {},
                    scoped_key=True,
                    hint="Add the bucket names to the configuration (buckets) to test access to each of them.",
                )
            return TestReport(False, f"Could not list buckets at {where}: {reason(error)}.", [], {})
        except (TimeoutError, BotoCoreError) as error:
            return TestReport(False, f"Could not reach {where}: {reason(error)}.", [], {})
        return TestReport(True, f"Connected to {where}: {len(found)} bucket(s) visible.", found, {})


S3: web.AppKey[S3Client] = web.AppKey("s3")
