"""A real S3-compatible server for tests: moto in server mode, with IAM enforcement.

The first ``SETUP_ACTIONS`` requests (our own setup) run unauthenticated; every request after
that is signed and checked against the IAM users created here, as a real endpoint would.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import requests
from aiohttp import web
from botocore.config import Config

from tests.support.postgres import free_port

BUCKETS = ("existing-one", "existing-two")
USERS = {
    "full": ["*"],
    "scoped": ["arn:aws:s3:::existing-one", "arn:aws:s3:::existing-one/*"],
}
# May manage IAM users and keys after setup, as an admin replacing a key does.
KEY_MANAGER = "key-manager"
# create_bucket; then create_user, put_user_policy, create_access_key for each user and the key manager
SETUP_ACTIONS = len(BUCKETS) + 3 * (len(USERS) + 1)


@dataclass(frozen=True)
class AccessKey:
    access_key: str
    secret_key: str = field(repr=False)


class MotoS3:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_ACTIONS)}
        env.pop("AWS_ENDPOINT_URL", None)
        log = open(workdir / "moto.log", "wb")  # noqa: SIM115 - the server's own log, kept open by it
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        self._wait()
        self.keys = self._setup()
        # allowed iam:* (an issuer's identity, a stand-in's backstage)
        self.key_manager = self.keys.pop(KEY_MANAGER)
        self._iam = self.client("iam", self.key_manager)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(f"{self.url}/moto-api/", timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError("moto did not start")

    def client(self, service: str, key: AccessKey) -> Any:
        """A boto3 client of this server signing as ``key``."""
        import boto3  # comes with moto (the test extra): imported here, so collecting the tests needs neither

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=key.access_key,
            aws_secret_access_key=key.secret_key,
            config=Config(s3={"addressing_style": "path"}),
        )

    async def allows(self, key: AccessKey, action: str, bucket: str) -> bool:
        """Whether S3 lets ``key`` read (get the object "readable") or write (put an object) in
        ``bucket``. Listing is not asked: moto names the listing action differently from AWS
        (s3:ListObjectsV2, not s3:ListBucket), and the IAM issuer writes AWS's policy."""
        from botocore.exceptions import ClientError

        def attempt() -> bool:
            client = self.client("s3", key)
            try:
                if action == "write":
                    client.put_object(Bucket=bucket, Key=f"probe-{uuid.uuid4().hex}", Body=b"x")
                else:
                    client.get_object(Bucket=bucket, Key="readable")
            except ClientError as error:
                assert error.response["Error"]["Code"] in ("AccessDenied", "InvalidAccessKeyId", "403"), error.response
                return False
            return True

        return await asyncio.to_thread(attempt)

    def _setup(self) -> dict[str, AccessKey]:
        setup = AccessKey("setup", "setup")
        s3, iam = self.client("s3", setup), self.client("iam", setup)
        for bucket in BUCKETS:
            s3.create_bucket(Bucket=bucket)
        keys = {}
        users = {**{user: ("s3:*", resources) for user, resources in USERS.items()}, KEY_MANAGER: ("iam:*", ["*"])}
        for user, (actions, resources) in users.items():
            keys[user] = self._create_user(iam, user, actions, resources)
        return keys

    @staticmethod
    def _create_user(iam: Any, user: str, actions: str, resources: list[str]) -> AccessKey:
        iam.create_user(UserName=user)
        statement = {"Effect": "Allow", "Action": actions, "Resource": resources}
        iam.put_user_policy(
            UserName=user,
            PolicyName="policy",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [statement]}),
        )
        created = iam.create_access_key(UserName=user)["AccessKey"]
        return AccessKey(created["AccessKeyId"], created["SecretAccessKey"])

    def create_user(self, user: str, resources: list[str]) -> AccessKey:
        """A new IAM user allowed s3:* on ``resources``, and its first key."""
        return self._create_user(self._iam, user, "s3:*", resources)

    def create_key(self, user: str) -> AccessKey:
        """Another access key for ``user``: what an admin makes before replacing a key."""
        created = self._iam.create_access_key(UserName=user)["AccessKey"]
        return AccessKey(created["AccessKeyId"], created["SecretAccessKey"])

    def delete_key(self, user: str, key: AccessKey) -> None:
        """Delete ``key`` at IAM: requests signed with it are refused from now on."""
        self._iam.delete_access_key(UserName=user, AccessKeyId=key.access_key)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@dataclass
class StandIn:
    """A loopback HTTP server standing in for an S3 endpoint that misbehaves: ``handler`` answers
    each request; ``requests`` records (method, path, headers) of every request that arrived."""

    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def __aenter__(self) -> StandIn:
        async def record(request: web.Request) -> web.StreamResponse:
            self.requests.append((request.method, request.path, dict(request.headers)))
            return await self.handler(request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def list_buckets_xml(names: list[str]) -> bytes:
    """A ListBuckets answer naming ``names``."""
    buckets = "".join(
        f"<Bucket><Name>{escape(name)}</Name><CreationDate>2026-01-01T00:00:00Z</CreationDate></Bucket>"
        for name in names
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<ListAllMyBucketsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<Owner><ID>owner</ID></Owner><Buckets>{buckets}</Buckets></ListAllMyBucketsResult>"
    ).encode()
