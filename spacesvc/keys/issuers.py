"""What can create keys for environments (docs/keys.md): the issuer's side, whatever it is.

An issuer client mints a key limited to named buckets, lists the keys whose name starts with a
prefix, and deletes a key by its access key id. Every call goes through the process's
``Outbound`` (no redirects, addresses checked, bounded), within one deadline of ``DEADLINE``
seconds per operation; every failure is ``Unavailable("issuer", …)``, a 503 with
``dependency: "issuer"``, whose message names what went wrong and never a secret or token.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Literal, Protocol

from spacesvc.errors import Unavailable
from spacesvc.outbound import DEADLINE

Permission = Literal["read", "readwrite"]
PERMISSIONS: tuple[Permission, ...] = ("read", "readwrite")

DEPENDENCY = "issuer"
# What both DigitalOcean key names and IAM user names accept (IAM's limit: 64 characters).
NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9+=,.@_-]+")
MAX_NAME = 64


@dataclass(frozen=True)
class Grant:
    bucket: str
    permission: Permission


@dataclass(frozen=True)
class MintedKey:
    """A key as created: the only time its secret is seen. ``repr`` leaves the secret out."""

    name: str
    access_key: str
    secret_key: str = field(repr=False)
    created_at: datetime


@dataclass(frozen=True)
class KeyInfo:
    """A key as listed: never a secret."""

    name: str
    access_key: str
    created_at: datetime | None


class Issuer(Protocol):
    """A client of one issuer. Each method is one operation within DEADLINE seconds."""

    kind: str
    # the start of every key name it mints (the issuer test's key too)
    prefix: str

    async def create_key(self, name: str, grants: Sequence[Grant]) -> MintedKey:
        """A new key named ``name`` allowed ``grants`` and nothing else."""
        ...

    async def list_keys(self, prefix: str) -> list[KeyInfo]:
        """Every key whose name starts with ``prefix`` (and no other)."""
        ...

    async def delete_key(self, access_key: str) -> None:
        """Delete the key; a key that is already gone is not an error."""
        ...

    async def check(self) -> None:
        """That the issuer answers with these credentials and lets them create and delete keys
        (``POST /api/settings/spaces/issuer/test``): mints a key with no grants under the prefix
        and deletes it."""
        ...


def key_name(prefix: str, environment: str, counter: int) -> str:
    """``prefix`` + the environment's name + ``-`` + ``counter``, in the characters every issuer
    accepts (others become ``-``) and at most 64 of them (the environment's name is shortened)."""
    tail = f"-{counter}"
    middle = NAME_CHARACTERS.sub("-", environment).strip("-") or "environment"
    return prefix + middle[: max(1, MAX_NAME - len(prefix) - len(tail))] + tail


def unavailable(message: str, *, hint: str | None = None) -> Unavailable:
    return Unavailable(DEPENDENCY, message, hint=hint)


def redirect_failure(status: int) -> Unavailable:
    return unavailable(f"The key issuer answered with a redirect (HTTP {status}), which is not followed.")


def deadline_failure() -> Unavailable:
    return unavailable(f"The key issuer did not answer within the {DEADLINE:g}s deadline.")


# A throttled call without a usable wait is retried after this long; no retry comes sooner.
DEFAULT_WAIT = 1.0
MIN_WAIT = 0.2


@contextlib.asynccontextmanager
async def within_deadline() -> AsyncIterator[asyncio.Timeout]:
    """One operation's DEADLINE; running out of it is the issuer's 503."""
    try:
        async with asyncio.timeout(DEADLINE) as deadline:
            yield deadline
    except TimeoutError:
        raise deadline_failure() from None


def requested_wait(headers: Mapping[str, str], now: float) -> float:
    """How long a 429 asks to wait: ``retry-after`` (seconds or an HTTP date), else until
    ``ratelimit-reset`` (Unix time), else DEFAULT_WAIT; never less than MIN_WAIT."""
    retry_after = headers.get("retry-after", "").strip()
    reset = headers.get("ratelimit-reset", "").strip()
    wait: float | None = None
    if retry_after.isascii() and retry_after.isdigit():
        wait = float(retry_after)
    elif retry_after:
        with contextlib.suppress(TypeError, ValueError, IndexError):
            wait = parsedate_to_datetime(retry_after).timestamp() - now
    if wait is None and reset.isascii() and reset.isdigit():
        wait = float(reset) - now
    return max(MIN_WAIT, DEFAULT_WAIT if wait is None else wait)


ADDRESS_HINT = "docs/configuration.md (SPACESVC_OUTBOUND_ALLOW) says which endpoints the service connects to."
