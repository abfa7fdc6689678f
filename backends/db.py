"""The ``db`` backend: the secret AES-256-GCM encrypted in PostgreSQL, beside its row.

Each write uses a fresh random 96-bit nonce. The key id is stored with the ciphertext, and the
associated data binds the ciphertext to the configuration it belongs to, so a ciphertext copied
onto another row does not decrypt. The keyring's first key encrypts; every key decrypts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from backends.base import Health, SecretBackend, SecretLocation, SecretUnreadable

if TYPE_CHECKING:
    from spacesvc.settings import EncryptionKey

NONCE_BYTES = 12
KEYS_VARIABLE = "SPACESVC_ENCRYPTION_KEYS"

CIPHERTEXT_COLUMNS = "owner, key_id, nonce, ciphertext"
SELECT_CIPHERTEXT = f"SELECT {CIPHERTEXT_COLUMNS} FROM secret_ciphertexts WHERE owner = $1"
SELECT_ALL_CIPHERTEXTS = f"SELECT {CIPHERTEXT_COLUMNS} FROM secret_ciphertexts ORDER BY owner"
UPSERT_CIPHERTEXT = """
INSERT INTO secret_ciphertexts (owner, key_id, nonce, ciphertext, updated_at)
VALUES ($1, $2, $3, $4, now())
ON CONFLICT (owner) DO UPDATE
SET key_id = EXCLUDED.key_id, nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext, updated_at = now()
"""
DELETE_CIPHERTEXT = "DELETE FROM secret_ciphertexts WHERE owner = $1"


def associated_data(owner: str) -> bytes:
    return f"spacesvc:spaces-config:{owner}:secretKey".encode()


class DbSecretBackend(SecretBackend):
    name: ClassVar[str] = "db"
    writable: ClassVar[bool] = True

    def __init__(self, keys: Sequence[EncryptionKey]) -> None:
        if not keys:
            raise ValueError("the db backend needs at least one encryption key")
        self._primary_kid = keys[0].kid
        self._ciphers = {key.kid: AESGCM(key.key) for key in keys}

    async def read(self, conn: asyncpg.Connection, location: SecretLocation) -> str | None:
        row = await conn.fetchrow(SELECT_CIPHERTEXT, location.owner)
        if row is None:
            return None
        return self._decrypt(row)

    async def write(self, conn: asyncpg.Connection, location: SecretLocation, secret: str) -> int | None:
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = self._ciphers[self._primary_kid].encrypt(nonce, secret.encode(), associated_data(location.owner))
        await conn.execute(UPSERT_CIPHERTEXT, location.owner, self._primary_kid, nonce, ciphertext)
        return None

    async def delete(self, conn: asyncpg.Connection, location: SecretLocation) -> None:
        await conn.execute(DELETE_CIPHERTEXT, location.owner)

    async def health(self, conn: asyncpg.Connection) -> Health:
        rows = await conn.fetch(SELECT_ALL_CIPHERTEXTS)
        try:
            for row in rows:
                self._decrypt(row)
        except SecretUnreadable as error:
            return Health(False, str(error))
        return Health(True, f"{len(rows)} stored secret(s) decrypt; encrypting with key {self._primary_kid!r}")

    async def reencrypt(self, conn: asyncpg.Connection) -> int:
        """Re-encrypt every stored secret under the first key; returns how many changed key."""
        changed = 0
        async with conn.transaction():
            for row in await conn.fetch(SELECT_ALL_CIPHERTEXTS + " FOR UPDATE"):
                if row["key_id"] == self._primary_kid:
                    continue
                secret = self._decrypt(row)
                await self.write(conn, SecretLocation(row["owner"]), secret)
                changed += 1
        return changed

    def _decrypt(self, row: asyncpg.Record) -> str:
        """A stored ciphertext row (CIPHERTEXT_COLUMNS) back to its secret, or SecretUnreadable."""
        kid = row["key_id"]
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise SecretUnreadable(
                f"the stored secretKey is encrypted with key id {kid!r}, which is not in {KEYS_VARIABLE}",
                hint=f"Add the key {kid!r} back to {KEYS_VARIABLE} (after the current first key).",
            )
        try:
            return cipher.decrypt(row["nonce"], row["ciphertext"], associated_data(row["owner"])).decode()
        except InvalidTag:
            raise SecretUnreadable(
                f"the stored secretKey does not decrypt with key id {kid!r} "
                "(a different key under the same id, or a tampered ciphertext)",
                hint=f"Check that {KEYS_VARIABLE} holds the original key for {kid!r}.",
            ) from None
