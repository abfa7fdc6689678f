"""The ``db`` backend: the secret AES-256-GCM encrypted in PostgreSQL, beside its row.

Each write uses a fresh random 96-bit nonce. The key id is stored with the ciphertext, and the
associated data binds the ciphertext to the configuration it belongs to, so a ciphertext copied
onto another row does not decrypt. The keyring's first key encrypts; every key decrypts.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Self

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from backends.base import BackendSettings, Health, SecretBackend, SecretLocation
from backends.errors import ConfigError, SecretUnreadable

log = logging.getLogger("spacesvc.backends.db")

NONCE_BYTES = 12
KEYS_VARIABLE = "SPACESVC_ENCRYPTION_KEYS"
# With the embedded database and no SPACESVC_ENCRYPTION_KEYS: the keyring generated in the data dir.
KEY_FILE = "encryption-keys"

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


@dataclass(frozen=True)
class EncryptionKey:
    kid: str
    key: bytes = field(repr=False)


def new_encryption_key(kid: str) -> str:
    """A fresh random AES-256 key as one ``kid:base64key`` entry of SPACESVC_ENCRYPTION_KEYS."""
    return f"{kid}:{base64.b64encode(os.urandom(32)).decode()}"


def parse_encryption_keys(raw: str | None, variable: str = KEYS_VARIABLE) -> tuple[EncryptionKey, ...]:
    """Parse ``kid:base64key[,kid:base64key…]``; the first key encrypts, all decrypt."""
    if raw is None:
        return ()
    keys: list[EncryptionKey] = []
    for position, item in enumerate(raw.split(","), start=1):
        kid, sep, encoded = item.strip().partition(":")
        if not sep or not kid or not encoded:
            raise ConfigError(f"{variable}: entry {position} is not of the form kid:base64key")
        if not kid.replace("-", "").replace("_", "").isalnum() or len(kid) > 64:
            raise ConfigError(f"{variable}: entry {position} has a key id that is not [A-Za-z0-9_-]{{1,64}}")
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{variable}: key {kid!r} is not valid base64") from None
        if len(key) != 32:
            raise ConfigError(f"{variable}: key {kid!r} must decode to 32 bytes (AES-256), not {len(key)}")
        if any(existing.kid == kid for existing in keys):
            raise ConfigError(f"{variable}: key id {kid!r} appears twice")
        keys.append(EncryptionKey(kid, key))
    return tuple(keys)


def load_or_create_key_file(path: Path) -> tuple[EncryptionKey, ...]:
    """The keyring kept in the embedded data dir, generated (mode 0600) on first use."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(new_encryption_key("k1") + "\n")
        log.warning(
            "generated an encryption key file at %s (mode 0600); in production set "
            "%s and keep the key outside the data directory",
            path,
            KEYS_VARIABLE,
        )
    return parse_encryption_keys(path.read_text().strip(), variable=f"key file {path}")


@dataclass(frozen=True)
class DbSettings(BackendSettings):
    """The keyring: the first key encrypts, every key decrypts."""

    keys: tuple[EncryptionKey, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, embedded: bool) -> Self:
        keys = parse_encryption_keys(env.get(KEYS_VARIABLE, "").strip() or None)
        if not keys and not embedded:
            raise ConfigError(
                f"{KEYS_VARIABLE} is required with the db secret backend and an external "
                "database (SPACESVC_DATABASE_URL); generate one with: spacesvc secrets genkey"
            )
        return cls(keys)

    def for_embedded(self, data_dir: Path) -> Self:
        return self if self.keys else type(self)(load_or_create_key_file(data_dir / KEY_FILE))


def associated_data(owner: str) -> bytes:
    return f"spacesvc:spaces-config:{owner}:secretKey".encode()


class DbSecretBackend(SecretBackend):
    name: ClassVar[str] = "db"
    summary: ClassVar[str] = "AES-256-GCM encrypted in PostgreSQL, beside the configuration (the default)"
    variables: ClassVar[tuple[str, ...]] = (KEYS_VARIABLE,)
    settings_class: ClassVar[type[BackendSettings]] = DbSettings
    secret_follows_version: ClassVar[bool] = True
    writable: ClassVar[bool] = True

    def __init__(self, settings: DbSettings) -> None:
        if not settings.keys:
            raise ConfigError(f"{KEYS_VARIABLE}: the db backend needs at least one encryption key")
        self._primary_kid = settings.keys[0].kid
        self._ciphers = {key.kid: AESGCM(key.key) for key in settings.keys}

    @property
    def primary_key_id(self) -> str:
        return self._primary_kid

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
