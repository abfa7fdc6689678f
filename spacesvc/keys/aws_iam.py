"""The ``aws-iam`` issuer: one IAM user per key, with an inline policy naming its buckets and one
access key (docs/keys.md). Also serves S3-compatible stores that speak IAM.

The calls are IAM's query API (form-encoded POSTs to ``SPACESVC_IAM_ENDPOINT``), signed by
botocore's SigV4 signer and sent through the process's ``Outbound``, as the S3 client does: a
boto3 client would follow redirects and resolve and connect on its own, out of reach of the
address check, the turns and the size cap that every outbound call is held to.

Users spacesvc creates carry the IAM path ``/spacesvc/`` and the tag ``spacesvc``; it never
deletes a user outside that path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode
from xml.etree import ElementTree

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from spacesvc.errors import Unavailable
from spacesvc.keys.issuers import (
    ADDRESS_HINT,
    Grant,
    KeyInfo,
    MintedKey,
    redirect_failure,
    requested_wait,
    unavailable,
    within_deadline,
)
from spacesvc.outbound import DEADLINE, AddressRefused, Answer, Outbound, OutboundFailure

VERSION = "2010-05-08"
PATH = "/spacesvc/"
TAG = "spacesvc"
POLICY_NAME = "spacesvc-buckets"
# AWS's IAM is global and signs in us-east-1, whatever the issuer's region.
AWS_ENDPOINT = "https://iam.amazonaws.com"
AWS_SIGNING_REGION = "us-east-1"
READ_ACTIONS = ["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"]
WRITE_ACTIONS = [
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
    "s3:ListBucketMultipartUploads",
]
ERROR_CODE = re.compile(r"^[A-Za-z.]{1,60}$")
CREDENTIALS_HINT = "Check the issuer's accessKey and secretKey: an IAM identity allowed to manage users and their keys."


class IamError(Exception):
    """IAM answered with an error; ``code`` is its error code (EntityAlreadyExists, NoSuchEntity)."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code

    def unavailable(self, action: str) -> Unavailable:
        said = f"HTTP {self.status}" + (f" {self.code}" if self.code else "")
        if self.code in ("InvalidClientTokenId", "SignatureDoesNotMatch", "AccessDenied", "AccessDeniedException"):
            return unavailable(f"The key issuer refused the credentials on {action} ({said}).", hint=CREDENTIALS_HINT)
        return unavailable(f"The key issuer refused {action} ({said}).")


def policy_document(grants: Sequence[Grant]) -> str:
    """The inline policy: ``read`` lists and gets objects, ``readwrite`` also puts and deletes them,
    on the named buckets only."""
    statements = []
    for permission in ("read", "readwrite"):
        buckets = sorted({grant.bucket for grant in grants if grant.permission == permission})
        if buckets:
            actions = READ_ACTIONS + (WRITE_ACTIONS if permission == "readwrite" else [])
            resources = [arn for bucket in buckets for arn in (f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*")]
            statements.append({"Effect": "Allow", "Action": actions, "Resource": resources})
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, separators=(",", ":"))


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse(body: bytes) -> ElementTree.Element:
    try:
        return ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise unavailable("The key issuer's answer is not an IAM answer.") from None


def _text(root: ElementTree.Element, name: str) -> str:
    return next((node.text or "" for node in root.iter() if _local(node.tag) == name), "")


def _members(root: ElementTree.Element, container: str) -> list[ElementTree.Element]:
    return [
        member
        for node in root.iter()
        if _local(node.tag) == container
        for member in node
        if _local(member.tag) == "member"
    ]


def _time(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@dataclass
class AwsIamIssuer:
    """IAM at ``endpoint`` as the identity ``access_key`` / ``secret_key``."""

    outbound: Outbound
    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    region: str = "us-east-1"
    prefix: str = "spacesvc-"
    kind: str = "aws-iam"

    @property
    def signing_region(self) -> str:
        return AWS_SIGNING_REGION if self.endpoint.rstrip("/") == AWS_ENDPOINT else self.region

    async def _call(self, deadline: asyncio.Timeout, action: str, params: Mapping[str, str]) -> ElementTree.Element:
        """One IAM action; a throttled answer is retried while the deadline allows. IamError for
        IAM's refusals, Unavailable for everything else."""
        url = self.endpoint.rstrip("/") + "/"
        body = urlencode({"Action": action, "Version": VERSION, **params}).encode()
        while True:
            request = AWSRequest(
                method="POST",
                url=url,
                data=body,
                headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
            )
            SigV4Auth(Credentials(self.access_key, self.secret_key), "iam", self.signing_region).add_auth(request)
            try:
                answer = await self.outbound.request("POST", url, headers=dict(request.headers.items()), body=body)
            except AddressRefused as error:
                raise unavailable(f"The key issuer may not be reached: {error}.", hint=ADDRESS_HINT) from None
            except OutboundFailure as error:
                raise unavailable(f"The key issuer cannot be reached: {error.reason}.") from None
            if 200 <= answer.status < 300:
                return _parse(answer.body)
            if 300 <= answer.status < 400:
                raise redirect_failure(answer.status)
            refusal = self._error(answer)
            if answer.status != 429 and refusal.code != "Throttling":
                raise refusal
            wait = requested_wait(answer.headers, time.time())
            if wait >= (deadline.when() or 0.0) - asyncio.get_running_loop().time():
                raise unavailable(f"The key issuer is throttling spacesvc beyond the {DEADLINE:g}s deadline.")
            await asyncio.sleep(wait)

    @staticmethod
    def _error(answer: Answer) -> IamError:
        code = ""
        with contextlib.suppress(ElementTree.ParseError):
            code = _text(ElementTree.fromstring(answer.body), "Code")
        return IamError(answer.status, code if ERROR_CODE.match(code) else "")

    async def _try(self, deadline: asyncio.Timeout, action: str, params: Mapping[str, str]) -> ElementTree.Element:
        try:
            return await self._call(deadline, action, params)
        except IamError as error:
            raise error.unavailable(action) from None

    async def create_key(self, name: str, grants: Sequence[Grant]) -> MintedKey:
        """CreateUser (or the keyless user a crash left under that name), PutUserPolicy,
        CreateAccessKey."""
        async with within_deadline() as deadline:
            user = {"UserName": name}
            try:
                await self._call(
                    deadline,
                    "CreateUser",
                    {**user, "Path": PATH, "Tags.member.1.Key": TAG, "Tags.member.1.Value": "issued"},
                )
            except IamError as error:
                if error.code != "EntityAlreadyExists":
                    raise error.unavailable("CreateUser") from None
                await self._reusable(deadline, name)
            if grants:
                policy = {"PolicyName": POLICY_NAME, "PolicyDocument": policy_document(grants)}
                await self._try(deadline, "PutUserPolicy", {**user, **policy})
            created = await self._try(deadline, "CreateAccessKey", user)
        access_key, secret = _text(created, "AccessKeyId"), _text(created, "SecretAccessKey")
        if not access_key or not secret:
            raise unavailable("The key issuer's answer to CreateAccessKey holds no key.")
        return MintedKey(name, access_key, secret, _time(_text(created, "CreateDate")) or datetime.now(UTC))

    async def _reusable(self, deadline: asyncio.Timeout, name: str) -> None:
        """A user of that name exists: reused only if spacesvc made it and it holds no key (what a
        crash between CreateUser and CreateAccessKey leaves)."""
        found = await self._try(deadline, "GetUser", {"UserName": name})
        keys = await self._try(deadline, "ListAccessKeys", {"UserName": name})
        if _text(found, "Path") != PATH or _members(keys, "AccessKeyMetadata"):
            raise unavailable(f"The key issuer already holds a user named {name} with a key; not reused.")

    async def list_keys(self, prefix: str) -> list[KeyInfo]:
        """The access keys of the users under spacesvc's path whose name starts with ``prefix``."""
        async with within_deadline() as deadline:
            names: list[str] = []
            marker = ""
            while True:
                paging = {"MaxItems": "1000", **({"Marker": marker} if marker else {})}
                page = await self._try(deadline, "ListUsers", {"PathPrefix": PATH, **paging})
                names += [
                    name for member in _members(page, "Users") if (name := _text(member, "UserName")).startswith(prefix)
                ]
                marker = _text(page, "Marker")
                if _text(page, "IsTruncated") != "true" or not marker:
                    break
            listings = await asyncio.gather(
                *(self._try(deadline, "ListAccessKeys", {"UserName": name}) for name in names)
            )
        keys = [
            KeyInfo(name, access_key, _time(_text(member, "CreateDate")))
            for name, listing in zip(names, listings, strict=True)
            for member in _members(listing, "AccessKeyMetadata")
            if (access_key := _text(member, "AccessKeyId"))
        ]
        return sorted(keys, key=lambda info: (info.name, info.access_key))

    async def delete_key(self, access_key: str) -> None:
        """The access key, then (once the user holds no other key) its policy and the user itself;
        a key already gone is done. A key of a user outside spacesvc's path is not touched."""
        async with within_deadline() as deadline:
            try:
                used = await self._call(deadline, "GetAccessKeyLastUsed", {"AccessKeyId": access_key})
            except IamError as error:
                if error.code == "NoSuchEntity":
                    return
                raise error.unavailable("GetAccessKeyLastUsed") from None
            user = {"UserName": _text(used, "UserName")}
            if _text(await self._try(deadline, "GetUser", user), "Path") != PATH:
                raise unavailable("The key belongs to an IAM user spacesvc did not create; it is not deleted.")
            await self._gone_ok(deadline, "DeleteAccessKey", {**user, "AccessKeyId": access_key})
            if _members(await self._try(deadline, "ListAccessKeys", user), "AccessKeyMetadata"):
                return
            await self._gone_ok(deadline, "DeleteUserPolicy", {**user, "PolicyName": POLICY_NAME})
            await self._gone_ok(deadline, "DeleteUser", user)

    async def _gone_ok(self, deadline: asyncio.Timeout, action: str, params: Mapping[str, str]) -> None:
        try:
            await self._call(deadline, action, params)
        except IamError as error:
            if error.code != "NoSuchEntity":
                raise error.unavailable(action) from None

    async def check(self) -> None:
        key = await self.create_key(f"{self.prefix}issuer-test-{int(time.time())}", [])
        await self.delete_key(key.access_key)
