"""The ``digitalocean`` issuer: DigitalOcean's Spaces Keys API (docs/keys.md).

``POST /v2/spaces/keys`` mints a key limited to named buckets (its ``secret_key`` is shown only
then), ``GET /v2/spaces/keys`` lists keys page by page, ``DELETE /v2/spaces/keys/{access_key}``
deletes one; a bearer token authenticates. The API's base URL is the operator's
(``SPACESVC_DIGITALOCEAN_API_URL``), never an API client's. A 429 is retried after the wait the
answer asks for (``retry-after``, else ``ratelimit-reset``) while the operation's deadline allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from spacesvc.errors import Unavailable
from spacesvc.keys.issuers import (
    ADDRESS_HINT,
    Grant,
    KeyInfo,
    MintedKey,
    redirect_failure,
    requested_wait,
    unavailable,
    within_deadline,
)
from spacesvc.outbound import DEADLINE, AddressRefused, Answer, Outbound, OutboundFailure

KEYS = "/v2/spaces/keys"
PER_PAGE = 200
# A listing never reads more pages than this (DEADLINE ends it sooner on a slow API).
MAX_PAGES = 100
ERROR_ID = re.compile(r"^[a-z_]{1,40}$")
TOKEN_HINT = "Check the issuer's apiToken: a DigitalOcean API token allowed to create, read and delete Spaces keys."


def parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _not_an_answer() -> Unavailable:
    return unavailable("The key issuer's answer is not a Spaces Keys API answer.")


def _json(answer: Answer) -> dict[str, Any]:
    try:
        body = json.loads(answer.body)
    except ValueError:
        raise _not_an_answer() from None
    if not isinstance(body, dict):
        raise _not_an_answer()
    return body


def _key_fields(body: Any) -> tuple[dict[str, Any], str, str]:
    """A key object of an answer, its name and its access key id."""
    if not isinstance(body, dict):
        raise _not_an_answer()
    name, access_key = body.get("name"), body.get("access_key")
    if not isinstance(name, str) or not isinstance(access_key, str) or not access_key:
        raise _not_an_answer()
    return body, name, access_key


def _failure(answer: Answer) -> Unavailable:
    """The issuer's refusal in words: its status and error ``id``, never its message (which an
    API could fill with anything, the request included)."""
    if 300 <= answer.status < 400:
        return redirect_failure(answer.status)
    error_id = ""
    with contextlib.suppress(ValueError, AttributeError):
        candidate = json.loads(answer.body).get("id", "")
        error_id = candidate if isinstance(candidate, str) and ERROR_ID.match(candidate) else ""
    said = f"HTTP {answer.status}" + (f" {error_id}" if error_id else "")
    if answer.status == 401:
        return unavailable(f"The key issuer refused the API token ({said}).", hint=TOKEN_HINT)
    if answer.status == 403:
        return unavailable(f"The key issuer's API token may not manage Spaces keys ({said}).", hint=TOKEN_HINT)
    if answer.status == 429:
        return unavailable(f"The key issuer is rate-limiting spacesvc ({said}) beyond the {DEADLINE:g}s deadline.")
    return unavailable(f"The key issuer answered {said}.")


@dataclass
class DigitalOceanIssuer:
    """The Spaces Keys API at ``base_url`` with ``api_token``."""

    outbound: Outbound
    base_url: str
    api_token: str = field(repr=False)
    prefix: str = "spacesvc-"
    per_page: int = PER_PAGE
    kind: str = "digitalocean"

    async def _send(
        self, deadline: asyncio.Timeout, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> Answer:
        """One call, repeated after each 429 as the answer asks, while the deadline allows."""
        headers = {"Authorization": f"Bearer {self.api_token}", "Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        while True:
            try:
                answer = await self.outbound.request(method, self.base_url + path, headers=headers, body=data)
            except AddressRefused as error:
                raise unavailable(f"The key issuer may not be reached: {error}.", hint=ADDRESS_HINT) from None
            except OutboundFailure as error:
                raise unavailable(f"The key issuer cannot be reached: {error.reason}.") from None
            if answer.status != 429:
                return answer
            wait = requested_wait(answer.headers, time.time())
            left = (deadline.when() or 0.0) - asyncio.get_running_loop().time()
            if wait >= left:
                raise unavailable(
                    f"The key issuer is rate-limiting spacesvc and asks to wait {wait:.0f}s, "
                    f"beyond the {DEADLINE:g}s deadline."
                )
            await asyncio.sleep(wait)

    async def create_key(self, name: str, grants: Sequence[Grant]) -> MintedKey:
        request = {"name": name, "grants": [{"bucket": g.bucket, "permission": g.permission} for g in grants]}
        async with within_deadline() as deadline:
            answer = await self._send(deadline, "POST", KEYS, request)
        if answer.status not in (200, 201):
            raise _failure(answer)
        key, key_name, access_key = _key_fields(_json(answer).get("key"))
        secret = key.get("secret_key")
        if not isinstance(secret, str) or not secret:
            raise _not_an_answer()
        return MintedKey(key_name, access_key, secret, parse_time(key.get("created_at")) or datetime.now(UTC))

    async def list_keys(self, prefix: str) -> list[KeyInfo]:
        """Every page of the account's keys, those starting with ``prefix`` kept. The API's
        ``name`` filter is not relied on (its matching is not documented); the page links are
        read only to know whether another page exists: the next page is asked of ``base_url``
        itself, so the token never goes to a host an answer names."""
        found: dict[str, KeyInfo] = {}
        async with within_deadline() as deadline:
            for page in range(1, MAX_PAGES + 1):
                query = urlencode({"page": page, "per_page": self.per_page})
                answer = await self._send(deadline, "GET", f"{KEYS}?{query}")
                if answer.status != 200:
                    raise _failure(answer)
                body = _json(answer)
                keys = body.get("keys")
                if not isinstance(keys, list):
                    raise _not_an_answer()
                for item in keys:
                    key, name, access_key = _key_fields(item)
                    if name.startswith(prefix):
                        found[access_key] = KeyInfo(name, access_key, parse_time(key.get("created_at")))
                links = body.get("links")
                pages = links.get("pages") if isinstance(links, dict) else None
                if not keys or not isinstance(pages, dict) or not pages.get("next"):
                    break
        return sorted(found.values(), key=lambda info: info.name)

    async def delete_key(self, access_key: str) -> None:
        async with within_deadline() as deadline:
            answer = await self._send(deadline, "DELETE", f"{KEYS}/{quote(access_key, safe='')}")
        if answer.status not in (200, 202, 204, 404):
            raise _failure(answer)

    async def check(self) -> None:
        name = f"{self.prefix}issuer-test-{int(time.time())}"
        key = await self.create_key(name, [])
        await self.delete_key(key.access_key)
