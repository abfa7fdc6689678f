"""The S3 client: talking to the configured S3-compatible endpoint for the connection test and
bucket discovery.

botocore signs each request (SigV4, its own code); the request itself goes out through the
process's ``Outbound`` (``spacesvc.outbound``: no redirects, addresses checked after resolution,
bounded in number and size), within one deadline of ``DEADLINE`` seconds for a whole test or
listing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from xml.etree import ElementTree

from aiohttp import web
from aiohttp.abc import AbstractResolver
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import InvalidRegionError
from botocore.utils import validate_region_name

from spacesvc.errors import InvalidInput
from spacesvc.outbound import DEADLINE, AddressRefused, Outbound, OutboundFailure
from spacesvc.outbound import MAX_OUTBOUND as MAX_OUTBOUND  # the limit the S3 calls are held to
from spacesvc.spaces.schemas import bucket_name_problem

# A bucket listing answers again from memory for this long per configuration version.
LISTING_SECONDS = 10.0

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class Target:
    """Where and as whom to connect. ``repr`` leaves the secret out."""

    endpoint: str
    region: str
    access_key: str
    secret_key: str = field(repr=False)


class S3Error(OutboundFailure):
    """The endpoint answered, with a status other than 2xx."""

    def __init__(self, status: int, code: str, *, head: bool = False) -> None:
        super().__init__(_answer_reason(status, code, head=head))
        self.status = status
        self.code = code


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


class S3Client:
    """One per process: the outbound calls (shared with the key issuers, so the turns are the
    process's) and the listings kept."""

    def __init__(
        self, allow: Iterable[str] = (), *, resolver: AbstractResolver | None = None, outbound: Outbound | None = None
    ) -> None:
        self.outbound = outbound if outbound is not None else Outbound(allow, resolver=resolver)
        # discovered listings by (configuration id, version)
        self.listings: Listings[tuple[str, int], dict[str, Any]] = Listings()

    async def close(self) -> None:
        await self.outbound.close()

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
        try:
            self.outbound.policy.check_url(url)
        except AddressRefused as error:
            raise _refused(error) from None
        return url

    async def _call(self, target: Target, method: str, path: str) -> bytes:
        url = self.check_target(target) + path
        head = method == "HEAD"
        try:
            answer = await self.outbound.request(method, url, headers=_sign(target, method, url), read_body=not head)
        except AddressRefused as error:
            raise _refused(error) from None
        if not 200 <= answer.status < 300:
            raise S3Error(answer.status, _error_code(answer.body), head=head)
        return answer.body

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
