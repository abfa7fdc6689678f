"""The contract every secret backend keeps; each backend's test class subclasses one of these.

``BackendContract`` holds for every backend; ``WritableBackendContract`` adds what a backend
that stores secrets through the API must do, ``ReadOnlyBackendContract`` what one whose secret
is set outside the API must do. A subclass provides the ``backend`` fixture.
"""

from __future__ import annotations

import asyncpg
import pytest

import backends
from backends import ReadOnlyBackend, SecretBackend, SecretLocation
from tests.support.secrecy import SECRET

OWNER = SecretLocation("00000000-0000-0000-0000-00000000000a")
OTHER = SecretLocation("00000000-0000-0000-0000-00000000000b")


class BackendContract:
    @pytest.fixture
    def backend(self) -> SecretBackend:
        raise NotImplementedError

    async def test_name_is_a_selectable_backend(self, backend: SecretBackend) -> None:
        assert backend.name in backends.names()

    async def test_is_healthy_when_configured(self, backend: SecretBackend, conn: asyncpg.Connection) -> None:
        health = await backend.health(conn)
        assert health.ok, health.detail
        assert health.detail


class WritableBackendContract(BackendContract):
    async def test_is_writable(self, backend: SecretBackend) -> None:
        assert backend.writable and backend.read_only_hint is None

    async def test_write_then_read_returns_the_secret(self, backend: SecretBackend, conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            version = await backend.write(conn, OWNER, SECRET)
        assert await backend.read(conn, SecretLocation(OWNER.owner, version)) == SECRET

    async def test_overwrite_replaces_the_secret(self, backend: SecretBackend, conn: asyncpg.Connection) -> None:
        await backend.write(conn, OWNER, SECRET)
        version = await backend.write(conn, OWNER, SECRET + "-2")
        assert await backend.read(conn, SecretLocation(OWNER.owner, version)) == SECRET + "-2"

    async def test_secrets_of_different_owners_are_separate(
        self, backend: SecretBackend, conn: asyncpg.Connection
    ) -> None:
        version = await backend.write(conn, OWNER, SECRET)
        assert await backend.read(conn, SecretLocation(OTHER.owner, version)) is None

    async def test_delete_leaves_nothing_to_read(self, backend: SecretBackend, conn: asyncpg.Connection) -> None:
        location = SecretLocation(OWNER.owner, await backend.write(conn, OWNER, SECRET))
        async with conn.transaction():
            await backend.delete(conn, location)
        await backend.purge(location)
        assert await backend.read(conn, location) is None

    async def test_a_write_rolled_back_with_its_transaction_leaves_the_old_secret(
        self, backend: SecretBackend, conn: asyncpg.Connection
    ) -> None:
        version = await backend.write(conn, OWNER, SECRET)

        class Abort(Exception):
            pass

        with pytest.raises(Abort):
            async with conn.transaction():
                await backend.write(conn, OWNER, SECRET + "-new")
                raise Abort
        assert await backend.read(conn, SecretLocation(OWNER.owner, version)) == SECRET


class ReadOnlyBackendContract(BackendContract):
    configured_secret: str

    async def test_is_read_only_with_a_hint(self, backend: SecretBackend) -> None:
        assert not backend.writable and backend.read_only_hint

    async def test_writes_are_refused_and_change_nothing(
        self, backend: SecretBackend, conn: asyncpg.Connection
    ) -> None:
        with pytest.raises(ReadOnlyBackend):
            await backend.write(conn, OWNER, SECRET)
        assert await backend.read(conn, OWNER) == self.configured_secret

    async def test_delete_leaves_the_configured_secret(self, backend: SecretBackend, conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            await backend.delete(conn, OWNER)
        await backend.purge(OWNER)
        assert await backend.read(conn, OWNER) == self.configured_secret
