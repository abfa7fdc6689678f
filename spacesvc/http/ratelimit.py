"""Rate limits: token buckets kept in this process, per token or per client address, and the
middleware that spends them.

Budgets are per process: with several replicas behind a load balancer each replica has its own
(see docs/configuration.md for a shared budget).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

from aiohttp import web

from spacesvc.http.errors import ApiError, ErrorCode
from spacesvc.http.types import Handler
from spacesvc.settings import RateBudget
from spacesvc.typedefs import PRINCIPAL, RATE_LIMITS

MAX_TRACKED_KEYS = 100_000


class Decision(NamedTuple):
    allowed: bool
    remaining: int
    reset_seconds: int  # until the bucket is full again
    retry_after: int  # until one more request is allowed (0 when allowed)


class TokenBucket:
    """``budget.requests`` per ``budget.seconds`` for each key, refilled continuously."""

    def __init__(self, policy: str, budget: RateBudget) -> None:
        self.policy = policy
        self.budget = budget
        self._rate = budget.requests / budget.seconds
        self._policy_header = f'"{policy}";q={budget.requests};w={budget.seconds}'
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _level(self, key: str, now: float) -> float:
        tokens, updated = self._buckets.get(key, (float(self.budget.requests), now))
        return min(float(self.budget.requests), tokens + (now - updated) * self._rate)

    def take(self, key: str) -> Decision:
        """Spend one request of ``key``'s budget if there is one left."""
        now = time.monotonic()
        tokens = self._level(key, now)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._store(key, tokens, now)
        return self._decision(allowed, tokens)

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > MAX_TRACKED_KEYS:
            self._buckets.popitem(last=False)  # the least recently seen key: its bucket refills anyway

    def _decision(self, allowed: bool, tokens: float) -> Decision:
        missing = self.budget.requests - tokens
        return Decision(
            allowed=allowed,
            remaining=max(int(tokens), 0),
            reset_seconds=math.ceil(missing / self._rate),
            retry_after=0 if allowed else math.ceil((1.0 - tokens) / self._rate),
        )

    def headers(self, decision: Decision) -> dict[str, str]:
        """The IETF RateLimit-Policy and RateLimit fields (draft-ietf-httpapi-ratelimit-headers)."""
        return {
            "RateLimit-Policy": self._policy_header,
            "RateLimit": f'"{self.policy}";r={decision.remaining};t={decision.reset_seconds}',
        }

    def exceeded(self, decision: Decision, message: str) -> ApiError:
        return ApiError(
            ErrorCode.RATE_LIMITED,
            message,
            hint=f"Retry after {decision.retry_after}s; the budget is {self.budget.requests} "
            f"requests per {self.budget.seconds}s.",
            headers={"Retry-After": str(max(decision.retry_after, 1)), **self.headers(decision)},
        )


@dataclass(frozen=True)
class RateLimits:
    """The service's budgets; a None budget is switched off."""

    requests: TokenBucket | None
    auth_failures: TokenBucket | None

    @classmethod
    def from_budgets(cls, requests: RateBudget | None, auth_failures: RateBudget | None) -> RateLimits:
        return cls(
            TokenBucket("requests", requests) if requests else None,
            TokenBucket("auth-failures", auth_failures) if auth_failures else None,
        )


def _exempt(path: str) -> bool:
    return path in ("/healthz", "/readyz") or path == "/api/docs" or path.startswith("/api/docs/")


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Spend one request of the token's budget (or, without a token, the client address's)."""
    bucket = request.app[RATE_LIMITS].requests
    if bucket is None or _exempt(request.path):
        return await handler(request)
    principal = request.get(PRINCIPAL)
    key = f"token:{principal.token_id}" if principal else f"address:{request.remote}"
    decision = bucket.take(key)
    if not decision.allowed:
        whose = "this token" if principal else "this client address"
        raise bucket.exceeded(decision, f"Rate limit exceeded for {whose}.")
    response = await handler(request)
    response.headers.update(bucket.headers(decision))
    return response
