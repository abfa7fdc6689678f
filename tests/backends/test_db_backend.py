"""The db backend: AES-256-GCM in PostgreSQL, keyring, binding to its row."""

from __future__ import annotations

import os

import asyncpg
import pytest

from backends import SecretBackend, SecretUnreadable
from backends.db import DbSecretBackend
from spacesvc.settings import EncryptionKey
from tests.backends.contract import OTHER, OWNER, WritableBackendContract
from tests.conftest import SECRET, TEST_KEY
from tests.support.secrecy import assert_hidden

OLD_KEY = EncryptionKey("k0", os.urandom(32))


class TestDbBackendContract(WritableBackendContract):
    @pytest.fixture
    def backend(self) -> SecretBackend:
        return DbSecretBackend([TEST_KEY])


async def test_ciphertext_holds_no_plaintext_and_names_its_key(db: asyncpg.Connection) -> None:
    await DbSecretBackend([TEST_KEY]).write(db, OWNER, SECRET)
    row = await db.fetchrow("SELECT key_id, nonce, ciphertext FROM secret_ciphertexts")
    assert row["key_id"] == "k1"
    assert len(row["nonce"]) == 12
    assert_hidden(bytes(row["ciphertext"]), SECRET.encode(), where="the ciphertext")
    assert len(row["ciphertext"]) == len(SECRET.encode()) + 16  # GCM tag


async def test_every_write_uses_a_fresh_nonce(db: asyncpg.Connection) -> None:
    backend = DbSecretBackend([TEST_KEY])
    nonces = set()
    for _ in range(5):
        await backend.write(db, OWNER, SECRET)
        nonces.add(await db.fetchval("SELECT nonce FROM secret_ciphertexts"))
    assert len(nonces) == 5


async def test_a_ciphertext_copied_to_another_row_does_not_decrypt(db: asyncpg.Connection) -> None:
    backend = DbSecretBackend([TEST_KEY])
    await backend.write(db, OWNER, SECRET)
    await db.execute(
        "INSERT INTO secret_ciphertexts (owner, key_id, nonce, ciphertext) "
        "SELECT $1, key_id, nonce, ciphertext FROM secret_ciphertexts WHERE owner = $2",
        OTHER.owner,
        OWNER.owner,
    )
    with pytest.raises(SecretUnreadable):
        await backend.read(db, OTHER)


async def test_the_first_key_encrypts_and_every_key_decrypts(db: asyncpg.Connection) -> None:
    await DbSecretBackend([OLD_KEY]).write(db, OWNER, SECRET)
    rotated = DbSecretBackend([TEST_KEY, OLD_KEY])
    assert await rotated.read(db, OWNER) == SECRET
    await rotated.write(db, OWNER, SECRET)
    assert await db.fetchval("SELECT key_id FROM secret_ciphertexts") == "k1"


async def test_reencrypt_moves_secrets_to_the_first_key(db: asyncpg.Connection) -> None:
    await DbSecretBackend([OLD_KEY]).write(db, OWNER, SECRET)
    assert await DbSecretBackend([TEST_KEY, OLD_KEY]).reencrypt(db) == 1
    assert await db.fetchval("SELECT key_id FROM secret_ciphertexts") == "k1"
    assert await DbSecretBackend([TEST_KEY]).read(db, OWNER) == SECRET


async def test_a_missing_key_is_an_unhealthy_backend_not_an_empty_secret(db: asyncpg.Connection) -> None:
    await DbSecretBackend([OLD_KEY]).write(db, OWNER, SECRET)
    backend = DbSecretBackend([TEST_KEY])
    with pytest.raises(SecretUnreadable, match="'k0'"):
        await backend.read(db, OWNER)
    health = await backend.health(db)
    assert not health.ok and "k0" in health.detail


async def test_a_different_key_under_the_same_id_is_detected(db: asyncpg.Connection) -> None:
    await DbSecretBackend([TEST_KEY]).write(db, OWNER, SECRET)
    impostor = DbSecretBackend([EncryptionKey("k1", os.urandom(32))])
    health = await impostor.health(db)
    assert not health.ok and "does not decrypt" in health.detail
