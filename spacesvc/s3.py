"""The S3 client: talking to the configured S3-compatible endpoint for the connection test and
bucket discovery.

botocore signs each request (SigV4, its own code); the request itself goes out on one aiohttp
session per process that the service controls end to end (docs/guarantees.md, "Outbound calls"):

- no redirect is followed (a 3xx is a failure naming the status), so the signed request and the
  answer never come from a host other than the endpoint;
- every address is checked after DNS resolution, and the connection is made to the address
  checked (the session's resolver refuses before aiohttp connects): link-local, unspecified and
  multicast addresses are refused, and ``SPACESVC_OUTBOUND_ALLOW`` narrows further;
- at most ``MAX_OUTBOUND`` calls at once per process, each reading at most ``MAX_BODY_BYTES``,
  and one deadline of ``DEADLINE`` seconds for a whole test or listing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from xml.etree import ElementTree

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import InvalidRegionError
from botocore.utils import validate_region_name
from yarl import URL

from spacesvc.errors import InvalidInput
from spacesvc.spaces.schemas import bucket_name_problem

CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 5.0
# The whole of a connection test or a listing, however many calls it makes.
DEADLINE = 10.0
# Outbound calls in flight at once in one process; the rest wait their turn (within DEADLINE).
MAX_OUTBOUND = 16
# Response bodies are read up to this; a longer one is a failure, not a bigger buffer.
MAX_BODY_BYTES = 1 << 20
# A bucket listing answers again from memory for this long per configuration version.
LISTING_SECONDS = 10.0

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class Target:
    """Where and as whom to connect. ``repr`` leaves the secret out."""

    endpoint: str
    region: str
    access_key: str
    secret_key: str = field(repr=False)


class OutboundFailure(Exception):
    """A call that got no usable S3 answer; ``reason`` says why, in words for people (never the
    exception text of a library, which may quote the request)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class S3Error(OutboundFailure):
    """The endpoint answered, with a status other than 2xx."""

    def __init__(self, status: int, code: str, *, head: bool = False) -> None:
        super().__init__(_answer_reason(status, code, head=head))
        self.status = status
        self.code = code


class AddressRefused(Exception):
    """The endpoint's address may not be reached (docs/configuration.md, SPACESVC_OUTBOUND_ALLOW).
    Not an OSError: aiohttp passes it through from the resolver unchanged."""


def _answer_reason(status: int, code: str, *, head: bool) -> str:
    if 300 <= status < 400:
        return (
            f"the endpoint answered with a redirect (HTTP {status}), which is not followed; "
            "the bucket may be in another region or behind another endpoint"
        )
    if code == "NoSuchBucket" or (head and status == 404):
        return "the bucket does not exist"
    if code == "SignatureDoesNotMatch":
        return "the secret key does not match the access key"
    if code == "InvalidAccessKeyId":
        return "the access key is not known to the endpoint"
    if code in ("AccessDenied", "AllAccessDisabled") or (head and status == 403):
        return "access denied: wrong credentials, or no permission on this bucket"
    if code in ("PermanentRedirect", "AuthorizationHeaderMalformed"):
        return "the bucket is in another region or behind another endpoint"
    return f"the endpoint answered HTTP {status} ({code or 'no error code'})"


def endpoint_url(endpoint: str) -> str:
    """A configured endpoint as a URL: a bare host (optional :port) means https."""
    return endpoint.rstrip("/") if "://" in endpoint else f"https://{endpoint}"


# -- where the service may connect ----------------------------------------------------------------


def refused_kind(address: IpAddress) -> str | None:
    """Why an address is never reached (an IPv4-mapped IPv6 address counts as its IPv4), or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    return None


class AddressPolicy:
    """Which endpoints may be reached. Always refused: link-local (169.254.0.0/16, fe80::/10, where
    cloud metadata services answer), unspecified and multicast addresses. With an allow list
    (SPACESVC_OUTBOUND_ALLOW: host names and CIDRs), an endpoint must also be a listed host name
    or have every address inside a listed network."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.hosts: frozenset[str] = frozenset()
        self.networks: tuple[IpNetwork, ...] = ()
        hosts, networks = set(), []
        for entry in allow:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        self.hosts, self.networks = frozenset(hosts), tuple(networks)

    @property
    def restricted(self) -> bool:
        return bool(self.hosts or self.networks)

    def check(self, host: str, addresses: Iterable[str]) -> None:
        """Raise AddressRefused unless ``host`` may be reached at every one of ``addresses``."""
        listed_host = host.lower().rstrip(".") in self.hosts
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            kind = refused_kind(address)
            if kind is not None:
                raise AddressRefused(f"the endpoint's address is {kind}, which the service never connects to")
            if self.restricted and not listed_host and not any(address in network for network in self.networks):
                raise AddressRefused("the endpoint is not in SPACESVC_OUTBOUND_ALLOW")


class CheckedResolver(AbstractResolver):
    """Resolves with ``inner`` (the system's resolver by default) and hands aiohttp only addresses
    the policy allows: aiohttp then connects to exactly those, so a name cannot resolve to one
    address when checked and another when connected."""

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = DefaultResolver()
        results = await self._inner.resolve(host, port, family)
        self._policy.check(host, [result["host"] for result in results])
        return results

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


# -- the calls ------------------------------------------------------------------------------------


def _sign(target: Target, method: str, url: str) -> dict[str, str]:
    request = AWSRequest(method=method, url=url, data=b"")
    S3SigV4Auth(Credentials(target.access_key, target.secret_key), "s3", target.region).add_auth(request)
    return dict(request.headers.items())


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse_xml(body: bytes) -> ElementTree.Element | None:
    try:
        return ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None


def _error_code(body: bytes) -> str:
    root = _parse_xml(body) if body else None
    if root is None:
        return ""
    return next((child.text or "" for child in root if _local(child.tag) == "Code"), "")


def bucket_names(body: bytes) -> list[str]:
    """The bucket names of a ListBuckets answer, sorted; names that are not valid S3 bucket names
    are dropped (an endpoint's answer is not trusted to be what it says)."""
    root = _parse_xml(body)
    if root is None or _local(root.tag) != "ListAllMyBucketsResult":
        raise OutboundFailure("the endpoint's answer is not an S3 ListBuckets answer")
    names = {
        child.text or ""
        for bucket in root.iter()
        if _local(bucket.tag) == "Bucket"
        for child in bucket
        if _local(child.tag) == "Name"
    }
    return sorted(name for name in names if bucket_name_problem(name) is None)


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    if (response.content_length or 0) > MAX_BODY_BYTES:
        raise OutboundFailure(f"the endpoint's answer is larger than {MAX_BODY_BYTES // (1 << 20)} MiB")
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise OutboundFailure(f"the endpoint's answer is larger than {MAX_BODY_BYTES // (1 << 20)} MiB")
    return bytes(body)


class S3Client:
    """One per process: the policy, the session (its connections are reused across calls) and the
    turns of outbound calls."""

    def __init__(self, allow: Iterable[str] = (), *, resolver: AbstractResolver | None = None) -> None:
        self.policy = AddressPolicy(allow)
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None
        self._turns = asyncio.Semaphore(MAX_OUTBOUND)
        # discovered listings by (configuration id, version)
        self.listings: Listings[tuple[str, int], dict[str, Any]] = Listings()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:  # built on first use, inside the running loop
            connector = aiohttp.TCPConnector(
                resolver=CheckedResolver(self.policy, self._resolver), use_dns_cache=False, limit=MAX_OUTBOUND
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT),
                auto_decompress=False,
                skip_auto_headers={"Content-Type"},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def check_target(self, target: Target) -> str:
        """The endpoint's URL, once the target can be used at all; InvalidInput (the caller's 400)
        for a region the signer refuses or an address the service never reaches."""
        try:
            validate_region_name(target.region)
        except InvalidRegionError:
            raise InvalidInput(
                "S3 requests cannot be signed for this region (InvalidRegionError).",
                field="region",
                hint="Check the region: lowercase letters, digits and '-'.",
            ) from None
        url = endpoint_url(target.endpoint)
        host = URL(url).host or ""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if (
                self.policy.restricted
                and host.lower().rstrip(".") not in self.policy.hosts
                and not self.policy.networks
            ):
                raise _refused(AddressRefused("the endpoint is not in SPACESVC_OUTBOUND_ALLOW")) from None
        else:
            try:
                self.policy.check(host, [host])
            except AddressRefused as error:
                raise _refused(error) from None
        return url

    async def _call(self, target: Target, method: str, path: str) -> bytes:
        url = self.check_target(target) + path
        headers = {**_sign(target, method, url), "Accept-Encoding": "identity"}
        head = method == "HEAD"
        async with self._turns:
            try:
                async with self._http().request(
                    method, URL(url, encoded=True), headers=headers, allow_redirects=False
                ) as response:
                    status = response.status
                    body = b"" if head else await _read_capped(response)
            except AddressRefused as error:
                raise _refused(error) from None
            except aiohttp.ConnectionTimeoutError:
                raise OutboundFailure(f"the endpoint did not accept a connection within {CONNECT_TIMEOUT:g}s") from None
            except aiohttp.SocketTimeoutError:
                raise OutboundFailure(f"the endpoint did not answer within {READ_TIMEOUT:g}s") from None
            except (aiohttp.ClientSSLError, aiohttp.ClientConnectorCertificateError):
                raise OutboundFailure("the TLS handshake with the endpoint failed (certificate or protocol)") from None
            except aiohttp.ClientConnectorError:
                raise OutboundFailure(
                    "cannot connect to the endpoint (refused, or the host does not resolve)"
                ) from None
            except aiohttp.ClientError as error:
                raise OutboundFailure(f"the request failed ({type(error).__name__})") from None
        if not 200 <= status < 300:
            raise S3Error(status, _error_code(body), head=head)
        return body

    async def list_buckets(self, target: Target) -> list[str]:
        """The buckets the key can list, within DEADLINE; an S3Error with code AccessDenied is a
        bucket-scoped key."""
        try:
            async with asyncio.timeout(DEADLINE):
                return bucket_names(await self._call(target, "GET", "/"))
        except TimeoutError:
            raise OutboundFailure(f"the endpoint did not answer within the {DEADLINE:g}s deadline") from None

    async def head_buckets(self, target: Target, buckets: list[str]) -> dict[str, str]:
        """HeadBucket on each bucket, side by side within DEADLINE: why each failing one failed."""
        self.check_target(target)
        failures: dict[str, str] = {}

        async def check(bucket: str) -> None:
            try:
                await self._call(target, "HEAD", f"/{bucket}")
            except OutboundFailure as error:
                failures[bucket] = error.reason

        tasks = {asyncio.create_task(check(bucket)): bucket for bucket in buckets}
        finished, unfinished = await asyncio.wait(tasks, timeout=DEADLINE)
        for task in unfinished:
            task.cancel()
            failures[tasks[task]] = f"not checked within the test's {DEADLINE:g}s"
        await asyncio.gather(*unfinished, return_exceptions=True)
        refused = [task.exception() for task in finished if task.exception() is not None]
        if refused:  # the endpoint resolved to an address the service never reaches: InvalidInput
            raise refused[0]  # type: ignore[misc]
        return failures


def is_scoped_key(error: OutboundFailure) -> bool:
    """An AccessDenied on ListBuckets: the key is valid but limited to certain buckets."""
    return isinstance(error, S3Error) and error.code == "AccessDenied"


def _refused(error: AddressRefused) -> InvalidInput:
    return InvalidInput(
        f"The endpoint may not be used: {error}.",
        field="endpoint",
        hint="docs/configuration.md (SPACESVC_OUTBOUND_ALLOW) says which endpoints the service connects to.",
    )


class Listings(Generic[K, V]):
    """Answers kept for LISTING_SECONDS per key (a configuration's id and version)."""

    def __init__(self, seconds: float = LISTING_SECONDS) -> None:
        self._seconds = seconds
        self._kept: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        kept = self._kept.get(key)
        if kept is None or time.monotonic() - kept[0] >= self._seconds:
            return None
        return kept[1]

    def keep(self, key: K, value: V) -> None:
        now = time.monotonic()
        self._kept = {k: v for k, v in self._kept.items() if now - v[0] < self._seconds}
        self._kept[key] = (now, value)


S3: web.AppKey[S3Client] = web.AppKey("s3")
