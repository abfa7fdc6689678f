"""`spacesvc credentials`, the workload's side (docs/workloads.md): boto3 configured only with
credential_process, a file kept current whole, a command restarted with new credentials, and
one-line failures."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient

from spacesvc.settings import Settings
from tests.support.api import BODY, SPACES, MakeClient, Tokens, auth, create_environment, enable
from tests.support.cli import SPACESVC, clean_env, service_env
from tests.support.postgres import free_port
from tests.support.s3 import MotoS3
from tests.support.secrecy import SECRET, assert_hidden
from tests.support.service import Serve

CHILD = """
import os, sys, time
with open(sys.argv[1], "a") as log:
    log.write(f"{os.getpid()} {os.environ['AWS_ACCESS_KEY_ID']} {os.environ['AWS_ENDPOINT_URL_S3']}\\n")
if os.environ["AWS_ACCESS_KEY_ID"] == "DO00EXITKEY":
    sys.exit(7)
time.sleep(600)
"""


async def workload_token_file(client: TestClient, admin: dict, tokens: Tokens, tmp_path: Path, body: dict) -> Path:
    """Spaces configured with ``body`` and enabled for prod; a token bound to prod, in a 0600 file."""
    assert (await client.put(SPACES, json=body, headers=admin)).status == 201
    prod = await create_environment(client, admin, "prod")
    await enable(client, admin, prod)
    token_file = tmp_path / "token"
    token_file.write_text(await tokens.create("viewer", ("spaces:credentials",), environment="prod") + "\n")
    token_file.chmod(0o600)
    return token_file


def url_of(client: TestClient) -> str:
    return str(client.make_url("")).rstrip("/")


async def credentials(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run `spacesvc credentials ARGS` to its end, without blocking the service under test."""
    process = await asyncio.create_subprocess_exec(
        SPACESVC,
        "credentials",
        *args,
        env=clean_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(timeout):
        stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.fixture
async def running() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Long-running `spacesvc credentials` processes of a test, stopped (SIGTERM) at its end."""
    processes: list[asyncio.subprocess.Process] = []
    yield processes
    for process in processes:
        if process.returncode is None:
            process.terminate()
            async with asyncio.timeout(30):
                await process.wait()


async def start(running: list[asyncio.subprocess.Process], *args: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        SPACESVC,
        "credentials",
        *args,
        env=clean_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    running.append(process)
    return process


async def eventually(check: object, within: float, what: str) -> float:
    """Poll ``check()`` until it is true; the seconds it took."""
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - started < within, f"not within {within}s: {what}"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_boto3_configured_only_with_credential_process_keeps_working_when_the_key_is_replaced(
    make_client: MakeClient,
    settings: Settings,
    admin: dict,
    tokens: Tokens,
    s3: MotoS3,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a TTL far below botocore's 15-minute refresh lead: every call fetches the credentials again
    client = await make_client(settings.with_changes(credential_ttl_seconds=60.0))
    user = f"workload-{uuid.uuid4().hex[:8]}"
    first = await asyncio.to_thread(s3.create_user, user, ["arn:aws:s3:::existing-two", "arn:aws:s3:::existing-two/*"])
    body = {"accessKey": first.access_key, "secretKey": first.secret_key, "region": "us-east-1", "endpoint": s3.url}
    token_file = await workload_token_file(client, admin, tokens, tmp_path, {**body, "buckets": ["existing-two"]})
    aws_config, as_process = tmp_path / "aws-config", "--format credential-process"
    aws_config.write_text(
        textwrap.dedent(f"""\
            [default]
            credential_process = {SPACESVC} credentials --url {url_of(client)} --token-file {token_file} {as_process}
            endpoint_url = {s3.url}
            region = us-east-1
            s3 =
                addressing_style = path
            """)
    )
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws_config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials-file"))
    import boto3  # comes with moto (the test extra): imported here, so collecting the tests needs neither

    session = boto3.session.Session()
    # boto3 runs the credential_process synchronously: off the loop that serves it
    bucket = await asyncio.to_thread(session.client, "s3")

    def write_and_read(key: str, data: bytes) -> bytes:
        bucket.put_object(Bucket="existing-two", Key=key, Body=data)
        return bytes(bucket.get_object(Bucket="existing-two", Key=key)["Body"].read())

    async def deliveries() -> int:
        resp = await client.get("/api/audit", params={"resourceType": "credentials", "limit": "500"}, headers=admin)
        return len((await resp.json())["entries"])

    assert (await asyncio.to_thread(session.get_credentials)).method == "custom-process"
    before = await deliveries()
    assert await asyncio.to_thread(write_and_read, "first", b"one") == b"one"
    # the put and the get each fetched them again: the TTL is inside botocore's refresh lead
    assert await deliveries() - before == 2
    second = await asyncio.to_thread(s3.create_key, user)
    replaced = {**body, "accessKey": second.access_key, "secretKey": second.secret_key, "buckets": ["existing-two"]}
    assert (await client.put(SPACES, json=replaced, headers=admin)).status == 200
    await asyncio.to_thread(s3.delete_key, user, first)
    assert await asyncio.to_thread(write_and_read, "second", b"two") == b"two"  # the same client, no restart
    used = await asyncio.to_thread(lambda: session.get_credentials().get_frozen_credentials())
    assert used.access_key == second.access_key


async def test_a_reader_of_the_out_file_never_sees_a_partial_file(
    client: TestClient, admin: dict, tokens: Tokens, tmp_path: Path, running: list[asyncio.subprocess.Process]
) -> None:
    token_file = await workload_token_file(client, admin, tokens, tmp_path, BODY)
    out = tmp_path / "run" / "credentials.json"
    out.parent.mkdir()
    await start(running, "--url", url_of(client), "--token-file", str(token_file), "--out", str(out), "--watch")
    await eventually(out.exists, 30, "the first file")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    seen: list[str] = []
    broken: list[bytes] = []
    stop = threading.Event()

    def read_in_a_loop() -> None:
        while not stop.is_set():
            raw = out.read_bytes()
            try:
                seen.append(orjson.loads(raw)["accessKey"])
            except (orjson.JSONDecodeError, KeyError):
                broken.append(raw)

    reader = asyncio.create_task(asyncio.to_thread(read_in_a_loop))
    delays = []
    try:
        for i in range(6):
            key = f"DO00ROTATED{i}"
            assert (await client.patch(SPACES, json={"accessKey": key}, headers=admin)).status == 200
            delays.append(await eventually(lambda key=key: bool(seen) and seen[-1] == key, 10, f"file with {key}"))
    finally:
        stop.set()
        await reader
    assert broken == [] and len(seen) > 100
    assert sorted(delays)[len(delays) // 2] < 1.0, delays  # within a second of the change (load aside)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [path.name for path in out.parent.iterdir()] == ["credentials.json"]  # no temporary file left


async def test_a_new_version_with_the_same_rendering_leaves_the_out_file_alone(
    client: TestClient, admin: dict, tokens: Tokens, tmp_path: Path, running: list[asyncio.subprocess.Process]
) -> None:
    """A file watcher reloads on every rewrite: only a change of what the file says rewrites it."""
    token_file = await workload_token_file(client, admin, tokens, tmp_path, BODY)
    out = tmp_path / "aws.env"
    watching = ("--format", "env", "--out", str(out), "--watch")
    await start(running, "--url", url_of(client), "--token-file", str(token_file), *watching)
    await eventually(out.exists, 30, "the first file")
    first = out.stat().st_ino
    assert "fra1" not in out.read_text()
    assert (await client.patch(SPACES, json={"region": "fra1"}, headers=admin)).status == 200
    await eventually(lambda: "fra1" in out.read_text(), 10, "the file with the new region")
    rewritten = out.stat().st_ino
    assert rewritten != first  # what the file says changed: written anew, by rename
    other = await create_environment(client, admin, "other")
    await enable(client, admin, other)  # a new version of the configuration; the same credentials
    await asyncio.sleep(2)  # twice the time a change takes to reach the file
    assert out.stat().st_ino == rewritten


async def test_exec_restarts_the_command_with_the_new_key_and_passes_on_its_exit_status(
    client: TestClient, admin: dict, tokens: Tokens, tmp_path: Path, running: list[asyncio.subprocess.Process]
) -> None:
    token_file = await workload_token_file(client, admin, tokens, tmp_path, BODY)
    (tmp_path / "child.py").write_text(CHILD)
    log = tmp_path / "child.log"

    def runs() -> list[list[str]]:
        return [line.split() for line in log.read_text().splitlines()] if log.exists() else []

    agent = await start(
        running,
        "--url",
        url_of(client),
        "--token-file",
        str(token_file),
        "--exec",
        "--",
        sys.executable,
        str(tmp_path / "child.py"),
        str(log),
    )
    await eventually(lambda: len(runs()) == 1, 30, "the command started")
    first_pid, first_key, endpoint = runs()[0]
    assert (first_key, endpoint) == (BODY["accessKey"], "https://ams3.digitaloceanspaces.com")
    # a new version with the same credentials (another environment enabled) restarts nothing
    await enable(client, admin, await create_environment(client, admin, "dev"))
    await asyncio.sleep(1.5)
    assert len(runs()) == 1
    assert (await client.patch(SPACES, json={"accessKey": "DO00SECONDKEY"}, headers=admin)).status == 200
    await eventually(lambda: len(runs()) == 2, 10, "the command restarted")
    second_pid, second_key, _ = runs()[1]
    assert second_pid != first_pid and second_key == "DO00SECONDKEY"
    with pytest.raises(ProcessLookupError):
        os.kill(int(first_pid), 0)  # the first one was stopped
    # the command exits by itself (status 7): so does the agent, with its status
    assert (await client.patch(SPACES, json={"accessKey": "DO00EXITKEY"}, headers=admin)).status == 200
    async with asyncio.timeout(15):
        assert await agent.wait() == 7


async def test_each_format_prints_the_credentials_once(
    client: TestClient, admin: dict, tokens: Tokens, tmp_path: Path
) -> None:
    token_file = await workload_token_file(client, admin, tokens, tmp_path, BODY)
    common = ("--url", url_of(client), "--token-file", str(token_file))
    status, out, _ = await credentials(*common, "--format", "env")
    assert status == 0
    assert out.splitlines() == [
        f"export AWS_ACCESS_KEY_ID={BODY['accessKey']}",
        f"export AWS_SECRET_ACCESS_KEY={SECRET}",
        "export AWS_REGION=ams3",
        "export AWS_ENDPOINT_URL_S3=https://ams3.digitaloceanspaces.com",
    ]
    status, out, _ = await credentials(*common, "--format", "rclone")
    assert status == 0 and out.splitlines()[:2] == ["[spaces]", "type = s3"]
    assert f"secret_access_key = {SECRET}" in out.splitlines()
    status, out, _ = await credentials(*common, "--format", "credential-process")
    assert status == 0 and sorted(orjson.loads(out)) == ["AccessKeyId", "Expiration", "SecretAccessKey", "Version"]
    status, out, _ = await credentials(*common)  # json
    assert status == 0 and orjson.loads(out)["secretKey"] == SECRET


async def test_a_refused_token_or_an_unreachable_service_is_one_line_and_a_non_zero_exit(
    client: TestClient, admin: dict, tokens: Tokens, tmp_path: Path
) -> None:
    token_file = await workload_token_file(client, admin, tokens, tmp_path, BODY)
    unknown = tmp_path / "unknown-token"
    unknown.write_text("sps_" + "A" * 43)
    status, out, err = await credentials("--url", url_of(client), "--token-file", str(unknown))
    assert (status, out, len(err.splitlines())) == (1, "", 1)
    assert "refused the token (401" in err and "Traceback" not in err
    closed = f"http://127.0.0.1:{free_port()}"
    status, out, err = await credentials("--url", closed, "--token-file", str(token_file))
    assert (status, out, len(err.splitlines())) == (1, "", 1)
    assert f"the service at {closed} is not reachable" in err and "Traceback" not in err
    # the token itself is never taken on the command line
    token = token_file.read_text().strip()
    status, out, err = await credentials("--url", url_of(client), "--token", token)
    assert (status, out, len(err.splitlines())) == (2, "", 1)
    assert "--token-file" in err
    assert_hidden(err, token, where="the refusal")


async def test_the_last_good_file_is_kept_while_the_service_is_away(
    database_url: str, tokens: Tokens, tmp_path: Path, running: list[asyncio.subprocess.Process]
) -> None:
    port = free_port()
    service = await asyncio.to_thread(Serve, service_env(database_url), port)
    admin = auth(await tokens.create("admin", name="ops"))
    async with aiohttp.ClientSession(service.url) as http:
        assert (await http.put(SPACES, json=BODY, headers=admin)).status == 201
        created = await http.post("/api/environments", json={"name": "prod"}, headers=admin)
        prod = (await created.json())["environment"]["id"]
        await http.put(f"/api/settings/spaces/environments/{prod}", json={"enabled": True}, headers=admin)
    token_file = tmp_path / "token"
    token_file.write_text(await tokens.create("viewer", ("spaces:credentials",), environment="prod"))
    out = tmp_path / "credentials.env"
    agent = await start(
        running, "--url", service.url, "--token-file", str(token_file), "--format", "env", "--out", str(out), "--watch"
    )
    await eventually(out.exists, 30, "the first file")
    good = out.read_text()
    await asyncio.to_thread(service.stop)
    await asyncio.sleep(3)  # retrying meanwhile, with back-off
    assert out.read_text() == good and agent.returncode is None
    service = await asyncio.to_thread(Serve, service_env(database_url), port)
    try:
        async with aiohttp.ClientSession(service.url) as http:
            assert (await http.patch(SPACES, json={"accessKey": "DO00AFTERKEY"}, headers=admin)).status == 200
        await eventually(lambda: "DO00AFTERKEY" in out.read_text(), 40, "the file after the outage")
        agent.terminate()
        async with asyncio.timeout(15):
            assert await agent.wait() == 0
    finally:
        await asyncio.to_thread(service.stop)
    assert agent.stderr is not None
    said = (await agent.stderr.read()).decode().splitlines()
    assert len(said) == 2 and "not reachable" in said[0] and "keeping the last credentials" in said[0]
    assert said[1] == "spacesvc credentials: the service answers again"


async def test_sigterm_stops_the_command_first_and_passes_its_status_on(
    client: TestClient, admin: dict, tokens: Tokens, tmp_path: Path, running: list[asyncio.subprocess.Process]
) -> None:
    token_file = await workload_token_file(client, admin, tokens, tmp_path, BODY)
    (tmp_path / "child.py").write_text(CHILD)
    log = tmp_path / "child.log"
    agent = await start(
        running, "--url", url_of(client), "--token-file", str(token_file), "--exec", "--", sys.executable,
        str(tmp_path / "child.py"), str(log),
    )  # fmt: skip
    await eventually(lambda: log.exists() and log.read_text().endswith("\n"), 30, "the command started")
    child_pid = int(log.read_text().split()[0])
    agent.terminate()
    async with asyncio.timeout(20):
        assert await agent.wait() == 128 + 15  # the command's status: ended by SIGTERM
    with pytest.raises(ProcessLookupError):
        os.kill(child_pid, 0)
