"""The db backend: AES-256-GCM in PostgreSQL, keyring, binding to its row."""

from __future__ import annotations

import os

import asyncpg
import pytest

from backends import SecretBackend, SecretUnreadable
from backends.db import DbSecretBackend, DbSettings, EncryptionKey
from tests.backends.contract import OTHER, OWNER, WritableBackendContract
from tests.support.secrecy import SECRET, TEST_KEY, assert_hidden

OLD_KEY = EncryptionKey("k0", os.urandom(32))


class TestDbBackendContract(WritableBackendContract):
    @pytest.fixture
    def backend(self) -> SecretBackend:
        return DbSecretBackend(DbSettings((TEST_KEY,)))


async def test_ciphertext_holds_no_plaintext_and_names_its_key(conn: asyncpg.Connection) -> None:
    await DbSecretBackend(DbSettings((TEST_KEY,))).write(conn, OWNER, SECRET)
    row = await conn.fetchrow("SELECT key_id, nonce, ciphertext FROM secret_ciphertexts")
    assert row["key_id"] == "k1"
    assert len(row["nonce"]) == 12
    assert_hidden(bytes(row["ciphertext"]), SECRET.encode(), where="the ciphertext")
    assert len(row["ciphertext"]) == len(SECRET.encode()) + 16  # GCM tag


async def test_every_write_uses_a_fresh_nonce(conn: asyncpg.Connection) -> None:
    backend = DbSecretBackend(DbSettings((TEST_KEY,)))
    nonces = set()
    for _ in range(5):
        await backend.write(conn, OWNER, SECRET)
        nonces.add(await conn.fetchval("SELECT nonce FROM secret_ciphertexts"))
    assert len(nonces) == 5


async def test_a_ciphertext_copied_to_another_row_does_not_decrypt(conn: asyncpg.Connection) -> None:
    backend = DbSecretBackend(DbSettings((TEST_KEY,)))
    await backend.write(conn, OWNER, SECRET)
    await conn.execute(
        "INSERT INTO secret_ciphertexts (owner, key_id, nonce, ciphertext) "
        "SELECT $1, key_id, nonce, ciphertext FROM secret_ciphertexts WHERE owner = $2",
        OTHER.owner,
        OWNER.owner,
    )
    with pytest.raises(SecretUnreadable):
        await backend.read(conn, OTHER)


async def test_the_first_key_encrypts_and_every_key_decrypts(conn: asyncpg.Connection) -> None:
    await DbSecretBackend(DbSettings((OLD_KEY,))).write(conn, OWNER, SECRET)
    rotated = DbSecretBackend(DbSettings((TEST_KEY, OLD_KEY)))
    assert await rotated.read(conn, OWNER) == SECRET
    await rotated.write(conn, OWNER, SECRET)
    assert await conn.fetchval("SELECT key_id FROM secret_ciphertexts") == "k1"


async def test_reencrypt_moves_secrets_to_the_first_key(conn: asyncpg.Connection) -> None:
    await DbSecretBackend(DbSettings((OLD_KEY,))).write(conn, OWNER, SECRET)
    assert await DbSecretBackend(DbSettings((TEST_KEY, OLD_KEY))).reencrypt(conn) == 1
    assert await conn.fetchval("SELECT key_id FROM secret_ciphertexts") == "k1"
    assert await DbSecretBackend(DbSettings((TEST_KEY,))).read(conn, OWNER) == SECRET


async def test_a_missing_key_is_an_unhealthy_backend_not_an_empty_secret(conn: asyncpg.Connection) -> None:
    await DbSecretBackend(DbSettings((OLD_KEY,))).write(conn, OWNER, SECRET)
    backend = DbSecretBackend(DbSettings((TEST_KEY,)))
    with pytest.raises(SecretUnreadable, match="'k0'"):
        await backend.read(conn, OWNER)
    health = await backend.health(conn)
    assert not health.ok and "k0" in health.detail


async def test_a_different_key_under_the_same_id_is_detected(conn: asyncpg.Connection) -> None:
    await DbSecretBackend(DbSettings((TEST_KEY,))).write(conn, OWNER, SECRET)
    impostor = DbSecretBackend(DbSettings((EncryptionKey("k1", os.urandom(32)),)))
    health = await impostor.health(conn)
    assert not health.ok and "does not decrypt" in health.detail
