"""Test secrets made per run (none lives in the repository), and checking that secrets stay out
of text without printing them when they do not."""

from __future__ import annotations

import base64
import os
import secrets

import pytest

from backends.db import EncryptionKey

SECRET = "s3cr3t-" + secrets.token_urlsafe(24)
TEST_KEY = EncryptionKey("k1", os.urandom(32))


def keys_env(*keys: EncryptionKey) -> str:
    """Keys as SPACESVC_ENCRYPTION_KEYS spells them."""
    return ",".join(f"{k.kid}:{base64.b64encode(k.key).decode()}" for k in keys)


def assert_hidden(text: str | bytes, *secrets: str | bytes, where: str = "the output") -> None:
    """Fail if any of ``secrets`` occurs in ``text``; the failure names neither."""
    for position, secret in enumerate(secrets, start=1):
        if secret and secret in text:  # type: ignore[operator]
            pytest.fail(f"secret #{position} appears in {where}", pytrace=False)
