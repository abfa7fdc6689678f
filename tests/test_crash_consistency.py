"""kill -9 during bursts of writes (docs/guarantees.md): after each crash and restart the configuration's
fields and its secret still belong to the same write, and no write that was answered is lost."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest

from backends import BackendSettings, SecretBackend, create_backend
from backends.db import DbSettings
from backends.vault import VaultSettings
from spacesvc.spaces.queries import get_config
from tests.support.api import SPACES, Tokens
from tests.support.cli import clean_env
from tests.support.openbao import OpenBao
from tests.support.postgres import free_port
from tests.support.secrecy import SECRET, TEST_KEY, keys_env
from tests.support.service import Serve

CRASHES = 5
WRITERS = 6


@pytest.fixture(params=["db", "vault"])
async def backend_env(
    request: pytest.FixtureRequest, vault_config: VaultSettings, openbao: OpenBao
) -> AsyncIterator[tuple[dict[str, str], BackendSettings]]:
    if request.param == "db":
        yield {"SPACESVC_ENCRYPTION_KEYS": keys_env(TEST_KEY)}, DbSettings((TEST_KEY,))
    else:
        yield (
            {
                "SPACESVC_SECRET_BACKEND": "vault",
                "VAULT_ADDR": openbao.addr,
                "VAULT_TOKEN": openbao.root_token,
                "SPACESVC_VAULT_PATH": vault_config.path,
            },
            vault_config,
        )


def body(n: int) -> dict:
    """Write number ``n``: its access key and its secret name each other."""
    return {"accessKey": f"AK-{n}", "secretKey": f"{SECRET}-{n}", "buckets": [f"bucket-{n % 7:02d}"]}


async def burst(url: str, headers: dict[str, str], first: int, answered: dict[int, int]) -> None:
    """Writers PUT numbered bodies until the server dies; ``answered`` maps version → write number."""
    counter = iter(range(first, first + 100_000))

    async def writer(http: aiohttp.ClientSession) -> None:
        while True:
            n = next(counter)
            try:
                async with http.put(f"{url}{SPACES}", json=body(n), headers=headers) as resp:
                    if resp.status in (200, 201):
                        answered[(await resp.json())["config"]["version"]] = n
            except (TimeoutError, aiohttp.ClientError):
                return

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        await asyncio.gather(*(writer(http) for _ in range(WRITERS)))


async def test_a_crash_at_any_point_of_a_write_leaves_fields_and_secret_of_one_write(
    database_url: str, tokens: Tokens, backend_env: tuple[dict[str, str], BackendSettings]
) -> None:
    variables, backend_settings = backend_env
    env = clean_env(SPACESVC_DATABASE_URL=database_url, SPACESVC_RATE_LIMIT="off", **variables)
    headers = {"Authorization": f"Bearer {await tokens.create('admin')}"}
    backend: SecretBackend = create_backend(backend_settings)
    conn = await asyncpg.connect(database_url)
    answered: dict[int, int] = {}
    writes = 0
    try:
        for crash in range(CRASHES):
            server = Serve(env, free_port())
            task = asyncio.create_task(burst(server.url, headers, crash * 100_000, answered))
            await asyncio.sleep(random.uniform(0.3, 1.2))
            server.kill()
            await task
            config = await get_config(conn)
            assert config is not None
            n = int(config.fields.access_key.removeprefix("AK-"))
            # the fields and the secret are those of one and the same write
            assert config.fields.buckets == (f"bucket-{n % 7:02d}",)
            assert await backend.read(conn, config.secret_location) == f"{SECRET}-{n}", f"crash {crash + 1}"
            # no answered write is lost: the stored version is at least the newest answered one
            newest = max(answered)
            assert config.version >= newest
            if config.version == newest:
                assert n == answered[newest]
            writes = len(answered)
    finally:
        await backend.close()
        await conn.close()
    assert writes >= CRASHES  # the bursts did write between the crashes
    print(f"{CRASHES} kills over {writes} answered writes: fields and secret always agreed")
