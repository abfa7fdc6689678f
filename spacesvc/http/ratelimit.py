"""Rate limits: a budget per token (or, without one, per client address), the failed-auth budget
per address, and where they are kept (the request pipeline spends them, ``spacesvc.http.pipeline``).

``SPACESVC_RATE_LIMIT_STORAGE`` chooses where budgets live:

- ``memory`` (the default): token buckets in this process, refilled continuously. Each process
  and replica has its own, so N processes admit up to N budgets.
- ``redis://host:port/db``: a moving window in a Redis or Valkey server shared by every process
  and replica (the ``limits`` library's, one Lua script per request): one budget in all. If that
  server fails to answer within ``STORAGE_TIMEOUT``, requests are served without limiting (never
  failed): logged once when it goes and once when it is back, counted in metrics, and not asked
  again for ``STORAGE_RETRY_SECONDS``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from aiohttp import web
from limits import RateLimitItemPerSecond
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from spacesvc.errors import ConfigError
from spacesvc.http.errors import ApiError, ErrorCode
from spacesvc.instruments import RATE_LIMIT_STORAGE_ERRORS, RATE_LIMIT_STORAGE_UP, RATE_LIMITED
from spacesvc.settings import SETTINGS, RateBudget, Settings

log = logging.getLogger("spacesvc.ratelimit")

MAX_TRACKED_KEYS = 100_000
# A shared storage that takes longer than this is treated as down for STORAGE_RETRY_SECONDS.
STORAGE_TIMEOUT = 0.25
STORAGE_RETRY_SECONDS = 1.0


class Decision(NamedTuple):
    allowed: bool
    remaining: int
    reset_seconds: int  # until the budget is whole again
    retry_after: int  # until one more request is allowed (0 when allowed)


class Budget:
    """``budget.requests`` per ``budget.seconds`` for each key, named ``policy`` in the headers."""

    def __init__(self, policy: str, budget: RateBudget) -> None:
        self.policy = policy
        self.budget = budget
        self._policy_header = f'"{policy}";q={budget.requests};w={budget.seconds}'
        self._refused = RATE_LIMITED.labels(policy)

    async def take(self, key: str) -> Decision | None:
        """Spend one request of ``key``'s budget if there is one left; None: the storage cannot
        tell, serve without limiting."""
        raise NotImplementedError

    async def spent(self, key: str) -> Decision | None:
        """Whether ``key`` has no request left, without spending one: the refusal to answer with,
        or None (budget left, or the storage cannot tell)."""
        raise NotImplementedError

    def headers(self, decision: Decision) -> dict[str, str]:
        """The IETF RateLimit-Policy and RateLimit fields (draft-ietf-httpapi-ratelimit-headers)."""
        return {
            "RateLimit-Policy": self._policy_header,
            "RateLimit": f'"{self.policy}";r={decision.remaining};t={decision.reset_seconds}',
        }

    def exceeded(self, decision: Decision, message: str) -> ApiError:
        self._refused.inc()
        return ApiError(
            ErrorCode.RATE_LIMITED,
            message,
            hint=f"Retry after {decision.retry_after}s; the budget is {self.budget.requests} "
            f"requests per {self.budget.seconds}s.",
            headers={"Retry-After": str(max(decision.retry_after, 1)), **self.headers(decision)},
        )


class TokenBucket(Budget):
    """In this process: a bucket per key, refilled continuously."""

    def __init__(self, policy: str, budget: RateBudget) -> None:
        super().__init__(policy, budget)
        self._rate = budget.requests / budget.seconds
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _tokens_now(self, key: str, now: float) -> float:
        capacity = float(self.budget.requests)
        tokens, updated = self._buckets.get(key, (capacity, now))
        return min(capacity, tokens + (now - updated) * self._rate)

    async def spent(self, key: str) -> Decision | None:
        tokens = self._tokens_now(key, time.monotonic())
        if tokens >= 1.0:
            return None
        capacity = float(self.budget.requests)
        return Decision(False, 0, math.ceil((capacity - tokens) / self._rate), math.ceil((1.0 - tokens) / self._rate))

    async def take(self, key: str) -> Decision:
        now = time.monotonic()
        capacity = float(self.budget.requests)
        tokens = self._tokens_now(key, now)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        if len(self._buckets) > MAX_TRACKED_KEYS:
            self._buckets.popitem(last=False)  # the least recently seen key: its bucket refills anyway
        return Decision(
            allowed,
            max(int(tokens), 0),
            math.ceil((capacity - tokens) / self._rate),
            0 if allowed else math.ceil((1.0 - tokens) / self._rate),
        )


class SharedStorage:
    """The Redis (or Valkey) server every process shares, and whether it answers now."""

    def __init__(self, url: str) -> None:
        try:
            self.storage: Any = storage_from_string(
                "async+" + url, wrap_exceptions=True, connect_timeout=STORAGE_TIMEOUT, stream_timeout=STORAGE_TIMEOUT
            )
        except Exception:  # the message would repeat the URL, which may hold a password
            raise ConfigError("SPACESVC_RATE_LIMIT_STORAGE is not a Redis URL the client accepts") from None
        self.limiter = MovingWindowRateLimiter(self.storage)
        self._down_until = 0.0
        self.up = True
        RATE_LIMIT_STORAGE_UP.set(1)

    async def decide(self, item: RateLimitItemPerSecond, key: str) -> tuple[bool, int, float] | None:
        """(allowed, remaining, reset time) for one request of ``key``; None while it is down."""
        if time.monotonic() < self._down_until:
            RATE_LIMIT_STORAGE_ERRORS.inc()
            return None
        try:
            async with asyncio.timeout(STORAGE_TIMEOUT * 2):
                allowed = await self.limiter.hit(item, key)
                reset, remaining = await self.limiter.get_window_stats(item, key)
        except Exception as error:  # any failure of the storage: serve unlimited, never fail
            self._went_down(error)
            return None
        if not self.up:
            self.up = True
            RATE_LIMIT_STORAGE_UP.set(1)
            log.info("rate-limit storage answers again; budgets are shared again")
        return allowed, remaining, reset

    async def exhausted(self, item: RateLimitItemPerSecond, key: str) -> tuple[int, float] | None:
        """(remaining, reset time) when ``key`` has no request left, without spending one; None
        when it has, or while the storage is down."""
        if time.monotonic() < self._down_until:
            return None
        try:
            async with asyncio.timeout(STORAGE_TIMEOUT * 2):
                if await self.limiter.test(item, key):
                    return None
                reset, remaining = await self.limiter.get_window_stats(item, key)
        except Exception as error:  # any failure of the storage: serve unlimited, never fail
            self._went_down(error)
            return None
        return remaining, reset

    def _went_down(self, error: BaseException) -> None:
        RATE_LIMIT_STORAGE_ERRORS.inc()
        self._down_until = time.monotonic() + STORAGE_RETRY_SECONDS
        if self.up:
            self.up = False
            RATE_LIMIT_STORAGE_UP.set(0)
            log.error(
                "rate-limit storage is not answering (%s); serving without rate limits until it does",
                type(error).__name__,
            )

    async def close(self) -> None:
        """Disconnect from the server (limits keeps the coredis client on its bridge)."""
        self.storage.bridge.storage.connection_pool.disconnect()


class SharedBudget(Budget):
    """In the shared storage: a moving window per key, the same for every process."""

    def __init__(self, policy: str, budget: RateBudget, storage: SharedStorage) -> None:
        super().__init__(policy, budget)
        self._storage = storage
        self._item = RateLimitItemPerSecond(budget.requests, budget.seconds, namespace=f"spacesvc-{policy}")

    async def take(self, key: str) -> Decision | None:
        decided = await self._storage.decide(self._item, key)
        if decided is None:
            return None
        allowed, remaining, reset_at = decided
        reset_seconds = max(math.ceil(reset_at - time.time()), 0)
        return Decision(allowed, remaining, reset_seconds, 0 if allowed else max(reset_seconds, 1))

    async def spent(self, key: str) -> Decision | None:
        exhausted = await self._storage.exhausted(self._item, key)
        if exhausted is None:
            return None
        remaining, reset_at = exhausted
        reset_seconds = max(math.ceil(reset_at - time.time()), 1)
        return Decision(False, remaining, reset_seconds, reset_seconds)


@dataclass(frozen=True)
class RateLimits:
    """The service's budgets (a None budget is switched off) and the storage they share, if any."""

    requests: Budget | None
    auth_failures: Budget | None
    shared: SharedStorage | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        budgets = {"requests": settings.rate_limit, "auth-failures": settings.auth_failure_limit}
        made: dict[str, Budget | None]
        if settings.rate_limit_storage == "memory":
            RATE_LIMIT_STORAGE_UP.set(1)
            made = {policy: TokenBucket(policy, budget) if budget else None for policy, budget in budgets.items()}
            return cls(made["requests"], made["auth-failures"])
        shared = SharedStorage(settings.rate_limit_storage)
        made = {policy: SharedBudget(policy, budget, shared) if budget else None for policy, budget in budgets.items()}
        return cls(made["requests"], made["auth-failures"], shared)


RATE_LIMITS: web.AppKey[RateLimits] = web.AppKey("rate_limits")


async def rate_limits_ctx(app: web.Application) -> AsyncIterator[None]:
    """The budgets for the app's life; a shared storage's connections close with it."""
    limits = RateLimits.from_settings(app[SETTINGS])
    app[RATE_LIMITS] = limits
    try:
        yield
    finally:
        if limits.shared is not None:
            await limits.shared.close()
