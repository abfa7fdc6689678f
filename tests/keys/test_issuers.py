"""The key issuers' clients against real servers: DigitalOcean's Spaces Keys API as the local
stand-in (whose keys are IAM users on moto), and moto's IAM itself. What a key can do is asked of
moto's S3 with IAM enforced, as a workload would find out."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from spacesvc.errors import Unavailable
from spacesvc.keys.aws_iam import AwsIamIssuer
from spacesvc.keys.digitalocean import DigitalOceanIssuer
from spacesvc.keys.issuers import Grant, Issuer, MintedKey, key_name
from spacesvc.outbound import Outbound
from tests.support.s3 import AccessKey, MotoS3, StandIn
from tests.support.secrecy import assert_hidden
from tests.support.spaces_keys import SpacesKeysApi

OWN, OTHER = "existing-one", "existing-two"
TOKEN = "dop_v1_" + secrets.token_hex(24)


def unique(prefix: str = "spacesvc-") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}-"


async def can(s3: MotoS3, key: MintedKey, action: str, bucket: str) -> bool:
    return await s3.allows(AccessKey(key.access_key, key.secret_key), action, bucket)


@pytest.fixture
async def outbound() -> AsyncIterator[Outbound]:
    calls = Outbound()
    yield calls
    await calls.close()


@pytest.fixture
async def spaces_api(s3: MotoS3) -> AsyncIterator[SpacesKeysApi]:
    async with SpacesKeysApi(s3, TOKEN) as api:
        yield api


@pytest.fixture(params=["digitalocean", "aws-iam"])
async def issuer(request: pytest.FixtureRequest, s3: MotoS3, outbound: Outbound) -> AsyncIterator[Issuer]:
    """Each issuer type, against its real server."""
    admin = s3.client("s3", s3.keys["full"])
    for bucket in (OWN, OTHER):
        await asyncio.to_thread(admin.put_object, Bucket=bucket, Key="readable", Body=b"data")
    if request.param == "digitalocean":
        async with SpacesKeysApi(s3, TOKEN) as api:
            yield DigitalOceanIssuer(outbound, api.url, TOKEN)
    else:
        manager = s3.key_manager
        yield AwsIamIssuer(outbound, s3.url, manager.access_key, manager.secret_key)


async def test_a_minted_readwrite_key_reads_and_writes_its_bucket_and_is_denied_on_another(
    issuer: Issuer, s3: MotoS3
) -> None:
    key = await issuer.create_key(unique() + "web-1", [Grant(OWN, "readwrite")])
    assert await can(s3, key, "read", OWN) and await can(s3, key, "write", OWN)
    assert not await can(s3, key, "read", OTHER) and not await can(s3, key, "write", OTHER)
    assert key.secret_key not in repr(key)


async def test_a_read_key_reads_but_cannot_write(issuer: Issuer, s3: MotoS3) -> None:
    key = await issuer.create_key(unique() + "reports-1", [Grant(OWN, "read")])
    assert await can(s3, key, "read", OWN)
    assert not await can(s3, key, "write", OWN)


async def test_after_delete_key_the_key_is_denied_and_deleting_again_is_not_an_error(
    issuer: Issuer, s3: MotoS3
) -> None:
    prefix = unique()
    key = await issuer.create_key(prefix + "gone-1", [Grant(OWN, "readwrite")])
    assert await can(s3, key, "write", OWN)
    await issuer.delete_key(key.access_key)
    assert not await can(s3, key, "read", OWN) and not await can(s3, key, "write", OWN)
    await issuer.delete_key(key.access_key)
    assert await issuer.list_keys(prefix) == []


async def test_listing_by_prefix_returns_every_prefixed_key_and_never_another(issuer: Issuer) -> None:
    prefix, other = unique(), unique("manual-")
    mine = [await issuer.create_key(f"{prefix}env-{n}", [Grant(OWN, "read")]) for n in range(3)]
    theirs = await issuer.create_key(f"{other}env-1", [Grant(OWN, "read")])
    listed = await issuer.list_keys(prefix)
    assert sorted(k.access_key for k in listed) == sorted(k.access_key for k in mine)
    assert all(k.name.startswith(prefix) for k in listed) and theirs.access_key not in {k.access_key for k in listed}
    assert [k.access_key for k in await issuer.list_keys(other)] == [theirs.access_key]


async def test_the_issuer_test_creates_and_deletes_a_key_of_its_own(issuer: Issuer) -> None:
    prefix = unique()
    issuer.prefix = prefix
    await issuer.check()
    assert await issuer.list_keys(prefix) == []


async def test_the_digitalocean_issuer_test_mints_and_deletes_a_key_without_grants(
    spaces_api: SpacesKeysApi, outbound: Outbound
) -> None:
    await DigitalOceanIssuer(outbound, spaces_api.url, TOKEN, prefix="checked-").check()
    assert [method for method, _ in spaces_api.requests] == ["POST", "DELETE"] and spaces_api.keys == {}


async def test_an_iam_identity_that_may_only_read_fails_the_issuer_test(s3: MotoS3, outbound: Outbound) -> None:
    iam = s3.client("iam", s3.key_manager)
    reader = f"iam-reader-{uuid.uuid4().hex[:8]}"
    document = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iam:List*", "Resource": "*"}]}
    await asyncio.to_thread(iam.create_user, UserName=reader)
    await asyncio.to_thread(
        iam.put_user_policy, UserName=reader, PolicyName="read", PolicyDocument=json.dumps(document)
    )
    created = (await asyncio.to_thread(iam.create_access_key, UserName=reader))["AccessKey"]
    issuer = AwsIamIssuer(outbound, s3.url, created["AccessKeyId"], created["SecretAccessKey"])
    assert await issuer.list_keys("spacesvc-") is not None
    with pytest.raises(Unavailable) as failed:
        await issuer.check()
    assert failed.value.dependency == "issuer" and "CreateUser" in failed.value.message
    assert "403" in failed.value.message


async def test_digitalocean_listing_follows_every_page(spaces_api: SpacesKeysApi, outbound: Outbound) -> None:
    issuer = DigitalOceanIssuer(outbound, spaces_api.url, TOKEN)
    prefix = unique()
    for n in range(3):
        await issuer.create_key(f"{prefix}{n}", [])
    for n in range(2):
        await issuer.create_key(f"other-{n}", [])
    spaces_api.requests.clear()
    assert sorted(k.name for k in await issuer.list_keys(prefix)) == [f"{prefix}{n}" for n in range(3)]
    assert spaces_api.requests == [("GET", "/v2/spaces/keys?page=1&per_page=200")]
    issuer.per_page = 2
    spaces_api.requests.clear()
    assert sorted(k.name for k in await issuer.list_keys(prefix)) == [f"{prefix}{n}" for n in range(3)]
    assert [path for _, path in spaces_api.requests] == [f"/v2/spaces/keys?page={n}&per_page=2" for n in (1, 2, 3)]


@pytest.mark.parametrize(
    ("retry_after", "reset_after", "least"),
    [("1", 30.0, 0.9), (None, 2.0, 1.0)],
    ids=["retry-after", "ratelimit-reset"],
)
async def test_a_429_is_retried_after_the_wait_the_answer_asks_for(
    spaces_api: SpacesKeysApi, outbound: Outbound, retry_after: str | None, reset_after: float, least: float
) -> None:
    issuer = DigitalOceanIssuer(outbound, spaces_api.url, TOKEN)
    spaces_api.throttle(2, retry_after=retry_after, reset_after=reset_after)
    started = time.monotonic()
    key = await issuer.create_key(unique() + "busy-1", [Grant(OWN, "read")])
    assert key.access_key in spaces_api.keys and [m for m, _ in spaces_api.requests] == ["POST"] * 3
    assert len(spaces_api.waits) == 2 and all(wait >= least for wait in spaces_api.waits)
    assert time.monotonic() - started < 10


async def test_a_429_asking_for_longer_than_the_deadline_fails_at_once_naming_the_issuer(
    spaces_api: SpacesKeysApi, outbound: Outbound
) -> None:
    issuer = DigitalOceanIssuer(outbound, spaces_api.url, TOKEN)
    spaces_api.throttle(1, retry_after="60")
    started = time.monotonic()
    with pytest.raises(Unavailable) as failed:
        await issuer.create_key(unique() + "busy-1", [])
    assert failed.value.dependency == "issuer" and "60s" in failed.value.message
    assert time.monotonic() - started < 2 and spaces_api.keys == {}


async def test_an_issuer_slower_than_ten_seconds_is_unavailable_at_the_deadline(
    spaces_api: SpacesKeysApi, outbound: Outbound
) -> None:
    issuer = DigitalOceanIssuer(outbound, spaces_api.url, TOKEN, per_page=1)
    for n in range(3):
        await issuer.create_key(f"spacesvc-slow-{n}", [])
    spaces_api.delay = 4.0  # each call answers within the read timeout; three pages do not fit in 10 s
    started = time.monotonic()
    with pytest.raises(Unavailable) as failed:
        await issuer.list_keys("spacesvc-")
    assert failed.value.dependency == "issuer" and "10s deadline" in failed.value.message
    assert 9 < time.monotonic() - started < 12


async def test_a_redirect_is_a_failure_naming_the_status_and_is_never_followed(
    spaces_api: SpacesKeysApi, outbound: Outbound, s3: MotoS3
) -> None:
    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(spaces_api.url + request.path_qs)

    async with StandIn(redirect) as elsewhere:
        issuer: Issuer = DigitalOceanIssuer(outbound, elsewhere.url, TOKEN)
        with pytest.raises(Unavailable) as failed:
            await issuer.create_key(unique() + "moved-1", [])
        assert "302" in failed.value.message and "redirect" in failed.value.message
        manager = s3.key_manager
        issuer = AwsIamIssuer(outbound, elsewhere.url, manager.access_key, manager.secret_key)
        with pytest.raises(Unavailable) as failed_too:
            await issuer.list_keys("spacesvc-")
        assert "302" in failed_too.value.message
    assert spaces_api.requests == [] and len(elsewhere.requests) == 2


async def test_a_bad_token_is_a_clear_error_without_the_token(spaces_api: SpacesKeysApi, outbound: Outbound) -> None:
    wrong = "dop_v1_" + secrets.token_hex(24)
    issuer = DigitalOceanIssuer(outbound, spaces_api.url, wrong)
    for attempt in (issuer.create_key(unique() + "x-1", []), issuer.list_keys("spacesvc-"), issuer.check()):
        with pytest.raises(Unavailable) as failed:
            await attempt
        error = failed.value
        assert error.dependency == "issuer" and "refused the API token" in error.message and "401" in error.message
        assert_hidden(f"{error.message} {error.hint} {error!r}", wrong, TOKEN, where="the error")
    assert_hidden(repr(issuer), wrong, where="the issuer's repr")


async def test_bad_iam_credentials_are_a_clear_error_without_the_secret(s3: MotoS3, outbound: Outbound) -> None:
    wrong = secrets.token_urlsafe(30)
    issuer = AwsIamIssuer(outbound, s3.url, s3.key_manager.access_key, wrong)
    with pytest.raises(Unavailable) as failed:
        await issuer.create_key(unique() + "x-1", [Grant(OWN, "read")])
    assert failed.value.dependency == "issuer" and "refused the credentials" in failed.value.message
    assert_hidden(f"{failed.value.message} {failed.value.hint} {issuer!r}", wrong, where="the error")


async def test_a_key_outside_spacesvcs_iam_path_is_never_deleted(s3: MotoS3, outbound: Outbound) -> None:
    manual = s3.create_user(f"manual-{uuid.uuid4().hex[:8]}", ["arn:aws:s3:::existing-one/*"])
    manager = s3.key_manager
    issuer = AwsIamIssuer(outbound, s3.url, manager.access_key, manager.secret_key)
    with pytest.raises(Unavailable, match="did not create"):
        await issuer.delete_key(manual.access_key)
    client = s3.client("s3", manual)
    await asyncio.to_thread(client.put_object, Bucket=OWN, Key="manual-probe", Body=b"still works")


async def test_an_address_the_service_never_reaches_is_refused_before_connecting(outbound: Outbound) -> None:
    issuer = DigitalOceanIssuer(outbound, "http://169.254.169.254", TOKEN)
    with pytest.raises(Unavailable) as failed:
        await issuer.list_keys("spacesvc-")
    assert "link-local" in failed.value.message and "SPACESVC_OUTBOUND_ALLOW" in (failed.value.hint or "")


@pytest.mark.unit
def test_key_names_keep_the_prefix_and_counter_in_characters_every_issuer_accepts() -> None:
    assert key_name("spacesvc-", "staging", 3) == "spacesvc-staging-3"
    assert key_name("spacesvc-", "Team A/β web", 12) == "spacesvc-Team-A-web-12"
    long = key_name("spacesvc-", "x" * 100, 7)
    assert len(long) == 64 and long.startswith("spacesvc-x") and long.endswith("-7")
