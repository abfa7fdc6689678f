"""The service's outbound calls, whoever makes them (the S3 client, the key issuers): one aiohttp
session per process that the service controls end to end (docs/guarantees.md, "Outbound calls"):

- no redirect is followed (the caller turns a 3xx into a failure naming the status), so a signed
  request or a bearer token never goes to a host other than the one configured;
- every address is checked after DNS resolution, and the connection is made to the address
  checked (the session's resolver refuses before aiohttp connects): link-local, unspecified and
  multicast addresses are refused, and ``SPACESVC_OUTBOUND_ALLOW`` narrows further;
- at most ``MAX_OUTBOUND`` calls at once per process, each reading at most ``MAX_BODY_BYTES``;
  callers hold one deadline of ``DEADLINE`` seconds for a whole operation, however many calls it
  makes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from multidict import CIMultiDictProxy
from yarl import URL

CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 5.0
# The whole of an operation (a connection test, a listing, minting a key), however many calls it makes.
DEADLINE = 10.0
# Outbound calls in flight at once in one process; the rest wait their turn (within DEADLINE).
MAX_OUTBOUND = 16
# Response bodies are read up to this; a longer one is a failure, not a bigger buffer.
MAX_BODY_BYTES = 1 << 20

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class OutboundFailure(Exception):
    """A call that got no usable answer; ``reason`` says why, in words for people (never the
    exception text of a library, which may quote the request)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AddressRefused(Exception):
    """The endpoint's address may not be reached (docs/configuration.md, SPACESVC_OUTBOUND_ALLOW).
    Not an OSError: aiohttp passes it through from the resolver unchanged."""


@dataclass(frozen=True)
class Answer:
    """An answer of any status (redirects included: they are not followed)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


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

    def check_url(self, url: str) -> None:
        """What can be refused before any lookup: a literal address, or a host name when the allow
        list holds host names only (AddressRefused)."""
        host = URL(url).host or ""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if self.restricted and host.lower().rstrip(".") not in self.hosts and not self.networks:
                raise AddressRefused("the endpoint is not in SPACESVC_OUTBOUND_ALLOW") from None
        else:
            self.check(host, [host])


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


async def read_capped(response: aiohttp.ClientResponse) -> bytes:
    if (response.content_length or 0) > MAX_BODY_BYTES:
        raise OutboundFailure(f"the endpoint's answer is larger than {MAX_BODY_BYTES // (1 << 20)} MiB")
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise OutboundFailure(f"the endpoint's answer is larger than {MAX_BODY_BYTES // (1 << 20)} MiB")
    return bytes(body)


class Outbound:
    """One per process: the address policy, the session (its connections are reused across calls)
    and the turns of outbound calls, shared by every client that calls out."""

    def __init__(self, allow: Iterable[str] = (), *, resolver: AbstractResolver | None = None) -> None:
        self.policy = AddressPolicy(allow)
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None
        self._turns = asyncio.Semaphore(MAX_OUTBOUND)

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

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None = None,
        read_body: bool = True,
    ) -> Answer:
        """One call, in its turn, never following a redirect. AddressRefused for an address the
        service never reaches (the caller says what that means to its user); OutboundFailure when
        no answer came."""
        self.policy.check_url(url)
        async with self._turns:
            try:
                async with self._http().request(
                    method,
                    URL(url, encoded=True),
                    headers={**headers, "Accept-Encoding": "identity"},
                    data=body,
                    allow_redirects=False,
                ) as response:
                    content = await read_capped(response) if read_body else b""
                    return Answer(response.status, response.headers, content)
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
