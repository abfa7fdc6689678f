"""What a token is: its format, roles and scopes, and who a verified token says is calling.

A token is ``sps_`` + 32 random bytes (URL-safe base64). Only its SHA-256 is stored: the token
carries 256 bits of entropy, so a fast hash is enough and keeps authentication cheap.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

TOKEN_PREFIX = "sps_"
TOKEN_PATTERN = re.compile(r"^sps_[A-Za-z0-9_-]{43,}$")
ROLES = ("admin", "operator", "viewer")
SCOPES = ("settings:read", "settings:write", "spaces:credentials")
# The scope that lets a workload read the secret; a token with it is bound to one environment.
CREDENTIALS_SCOPE = "spaces:credentials"
# What the first admin token (made by `spacesvc serve` on an empty database) may do.
ADMIN_SCOPES = ("settings:read", "settings:write")
DURATION = re.compile(r"^(\d+)([smhd])$")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class TokenError(Exception):
    """A token command was given bad arguments; str() is one line for the user."""


class InvalidToken(Exception):
    """The presented token is unknown, expired or revoked."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name, role and scopes."""

    token_id: str
    name: str
    role: str
    scopes: frozenset[str]
    # the environment a token for workloads is bound to (None: not bound)
    environment_id: str | None = None
    # when the token stops working by itself (None: never)
    expires_at: datetime | None = None


@dataclass(frozen=True)
class TokenInfo:
    id: str
    name: str
    role: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    environment: str | None = None  # the bound environment's name


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_duration(text: str) -> timedelta:
    match = DURATION.match(text.strip())
    if not match or int(match[1]) == 0:
        raise TokenError(f"--expires-in {text!r}: use a positive duration such as 90s, 15m, 12h or 30d")
    return timedelta(seconds=int(match[1]) * DURATION_UNITS[match[2]])
