"""The Prometheus instruments: what the service counts (docs/configuration.md).

A leaf: it imports nothing of the service, so any layer may count. ``spacesvc.metrics`` is the
view that answers ``GET /metrics`` and sets the gauges of a process's own state.

Every label value is bounded: a method among the HTTP methods, a route template (never a raw
path), a status code, a backend or an outcome from a fixed set. No token, secret, id or address.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("spacesvc_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
DURATION = Histogram(
    "spacesvc_http_request_duration_seconds",
    "Time from the request's arrival in the app to its answer",
    ["method", "route", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
CACHE_READS = Counter(
    "spacesvc_cache_reads_total", "Reads of the configuration and tokens, by where they were served from", ["source"]
)
LISTENING = Gauge(
    "spacesvc_cache_listening", "1 while the process's LISTEN connection is up", multiprocess_mode="liveall"
)
NOTIFICATIONS = Counter("spacesvc_cache_notifications_total", "Change notifications received")
POOL_SIZE = Gauge("spacesvc_db_pool_connections", "PostgreSQL connections open", multiprocess_mode="livesum")
POOL_IDLE = Gauge("spacesvc_db_pool_idle_connections", "PostgreSQL connections idle", multiprocess_mode="livesum")
BACKEND_CALLS = Counter(
    "spacesvc_secret_backend_calls_total",
    "Calls to the secret backend",
    ["backend", "operation", "outcome"],
)
VAULT_TOKEN_TTL = Gauge(
    "spacesvc_vault_token_ttl_seconds",
    "Seconds left on the Vault token (absent for other backends)",
    multiprocess_mode="liveall",
)
RATE_LIMITED = Counter("spacesvc_rate_limited_total", "Requests refused by a rate budget", ["policy"])
RATE_LIMIT_STORAGE_ERRORS = Counter(
    "spacesvc_rate_limit_storage_errors_total", "Requests served without limiting: the shared storage failed"
)
RATE_LIMIT_STORAGE_UP = Gauge(
    "spacesvc_rate_limit_storage_up",
    "1 while the rate-limit storage answers (always 1 for memory)",
    multiprocess_mode="liveall",
)
IDEMPOTENT_REPLAYS = Counter("spacesvc_idempotent_replays_total", "Writes answered from a stored Idempotency-Key")
WATCHES = Gauge("spacesvc_watches_held", "Requests held by Prefer: wait now", multiprocess_mode="livesum")
WATCHES_ENDED = Counter("spacesvc_watches_answered_total", "Held requests answered, by outcome", ["outcome"])
CREDENTIAL_DELIVERIES = Counter("spacesvc_credential_deliveries_total", "Secrets delivered to workloads")
