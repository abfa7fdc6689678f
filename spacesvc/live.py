"""State kept in memory for reads, fresh on every replica through PostgreSQL LISTEN/NOTIFY
(docs/guarantees.md).

Every change that a read here depends on (a versioned resource such as the Spaces configuration
and its enablement, a token's revocation, an environment's deletion) sends ``NOTIFY
spacesvc_changes`` in its own transaction, from any process or command (``spacesvc.changes``).
Versioned resources (``spacesvc.resources.versioned``) are kept by name: ``read`` serves one,
``writing`` is how this process writes one, ``watch`` holds a read until its version moves on.
Each service process listens on a connection of its own and drops what a notification names the
moment it arrives, so a change is visible everywhere as soon as its commit is delivered.

Memory serves a read only while that connection is up and the value was loaded after it
subscribed; otherwise every read goes to PostgreSQL. A value read from PostgreSQL is kept only
if no notification (nor a loss of the connection) came while it was being read: ``_generation``
counts both.

Tokens: every token that may authenticate is kept by hash, read again on every notification about
tokens (a trigger sends one for any change of ``api_tokens``, an UPDATE typed in psql included)
and at least every TOKENS_RECHECK_SECONDS, so a revocation whose notification was lost still shows
within a minute. A token's expiry is checked at each use. A token PostgreSQL does not know is
remembered as unknown for UNKNOWN_TOKEN_SECONDS, and lookups take at most half of the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, cast

import asyncpg
from aiohttp import web

from spacesvc import changes, postgres
from spacesvc.changes import CHANNEL, TOKENS
from spacesvc.instruments import CACHE_READS, NOTIFICATIONS, WATCHES, WATCHES_ENDED
from spacesvc.resources.versioned import Versioned, VersionedResource
from spacesvc.settings import SETTINGS
from spacesvc.tokens import queries as tokens
from spacesvc.tokens.model import InvalidToken, Principal, hash_token

log = logging.getLogger("spacesvc.live")
T = TypeVar("T")
V = TypeVar("V", bound=Versioned)
FROM_MEMORY = CACHE_READS.labels("memory")
FROM_DATABASE = CACHE_READS.labels("database")
ENDED_UNCHANGED = WATCHES_ENDED.labels("unchanged")
ENDED_CHANGED = WATCHES_ENDED.labels("changed")

# How often the listening connection is checked, and how long a check may take.
PING_SECONDS = 5.0
PING_TIMEOUT = 2.0
RECONNECT_SECONDS = (0.1, 0.5, 1.0, 2.0, 5.0)
# A held watch reads again at least this often while no notification can wake it.
WATCH_POLL_SECONDS = 1.0
# Held watches are woken this many at a time, each batch answered before the next is woken: the
# first answers leave while later ones wait, and other requests are served between batches.
WAKE_BATCH = 256
# While held watches are being woken, the cyclic garbage collector waits, for at most this long
# (changes that keep coming cannot keep it off).
COLLECTOR_PAUSE_SECONDS = 2.0
# The tokens in memory are read again at least this often, notified or not.
TOKENS_RECHECK_SECONDS = 30.0
# A token PostgreSQL did not know is answered as unknown from memory for this long (a
# notification about tokens forgets them all); at most MAX_UNKNOWN are remembered.
UNKNOWN_TOKEN_SECONDS = 10.0
MAX_UNKNOWN = 10_000


@dataclass(frozen=True)
class _Verified:
    principal: Principal
    expires_at: datetime | None

    def valid(self) -> bool:
        return self.expires_at is None or datetime.now(UTC) < self.expires_at


_MISSING = object()


class LookupRefused(Exception):
    """The token is not known in memory, and the caller did not allow a database lookup."""


class Write(Generic[V]):
    """A write of a resource by this process (``LiveState.writing``): what memory holds of it, and
    what the write tells memory when it has committed."""

    def __init__(self, live: LiveState, resource: VersionedResource[V], remembered: V | None) -> None:
        self._live, self._resource = live, resource
        self._generation = live.generation
        self.remembered = remembered  # the value in memory, if it is known fresh

    def kept(self, value: V | None) -> None:
        """It committed ``value`` (None: deleted): serve it from memory at once, unless a
        notification came since the write began (then read through)."""
        live = self._live
        live.changed(self._resource.name)
        if live.listening and self._generation + 1 == live.generation:
            live._values[self._resource.name] = value

    def changed(self, *also: str) -> None:
        """It committed a change whose result it does not hold (and changed ``also``): drop it."""
        self._live.changed(self._resource.name, *also)


class LiveState:
    """Versioned resources and verified tokens, in memory while they are known to be fresh."""

    def __init__(self) -> None:
        self.listening = False
        self._generation = 0
        # each versioned resource's value by its name (None: there is none); absent: not loaded
        self._values: dict[str, Any] = {}
        # each resource's read in flight, with the generation it began in
        self._reading: dict[str, tuple[int, asyncio.Future[Any]]] = {}
        # every token that may authenticate, by hash (None: not loaded since the last change)
        self._tokens: dict[bytes, _Verified] | None = None
        self._tokens_loaded_at = 0.0
        self._tokens_loading: asyncio.Future[dict[bytes, _Verified]] | None = None
        self._token_generation = 0
        # moves on whenever the tokens in memory change (forgotten or read again): ``tokens_state``
        self._tokens_state = 0
        self._unknown: dict[bytes, float] = {}
        # token lookups (and loads) in flight at once: half the pool (live_ctx)
        self.token_lookups = asyncio.Semaphore(1)
        # held watches, each waiting on a future of its own, in the order they began waiting:
        # all are woken when something may have changed, one alone when its wait is over
        self._waiting: dict[asyncio.Future[None], None] = {}
        # their deadlines (a heap of (when, order, future)), served by one timer for the earliest
        self._deadlines: list[tuple[float, int, asyncio.Future[None]]] = []
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._order = itertools.count()
        # woken watches whose future is not resolved yet (``_wake_next_batch``)
        self._waking: deque[asyncio.Future[None]] = deque()
        self._collector_paused_at: float | None = None  # loop time, while the collector waits
        # this process's writes of a resource take turns: each starts from what the one before
        # left in memory, instead of all racing with the same guess (``writing``)
        self._writes: dict[str, asyncio.Lock] = {}
        # set when the process shuts down: held watches are answered at once
        self.stopping = False

    # -- reads ------------------------------------------------------------------------------------

    async def read(self, app: web.Application, resource: VersionedResource[V]) -> V | None:
        """The resource's value (None: there is none), from memory while it is known fresh."""
        cached = self._values.get(resource.name, _MISSING)
        if self.listening and cached is not _MISSING:
            FROM_MEMORY.inc()
            return cast("V | None", cached)  # a string: ``V | None`` would build a Union every read
        # Callers that find memory empty share one read begun since the last notification (what
        # it returns is at least as new as anything notified): a change from another replica
        # wakes every held watch here at once, and they would each have read PostgreSQL.
        # Not listening, nothing tells when a read begun earlier went stale: each reads its own.
        generation = self._generation
        if not self.listening:
            return await self._read(app, resource, generation)
        reading = self._reading.get(resource.name)
        if reading is None or reading[0] != generation or reading[1].done():
            future = asyncio.ensure_future(self._read(app, resource, generation))
            future.add_done_callback(_retrieve)
            reading = self._reading[resource.name] = (generation, future)
        return cast("V | None", await asyncio.shield(reading[1]))

    async def _read(self, app: web.Application, resource: VersionedResource[V], generation: int) -> V | None:
        FROM_DATABASE.inc()
        async with postgres.acquire(app) as conn:
            value = await resource.load(conn)
        if self.listening and generation == self._generation and resource.name not in self._values:
            self._values[resource.name] = value  # nothing newer came (nor went) while it was read
        return value

    def remembered(self, resource: VersionedResource[V]) -> V | None:
        """The value in memory if it is known fresh (None: none is, or there is none)."""
        return self._values.get(resource.name) if self.listening else None

    @asynccontextmanager
    async def writing(self, resource: VersionedResource[V]) -> AsyncIterator[Write[V]]:
        """This process's one way to write ``resource``: writes take turns, each offered what
        memory holds (``Write.remembered``) and telling memory what it committed (``Write.kept``,
        ``Write.changed``)."""
        async with self._writes.setdefault(resource.name, asyncio.Lock()):
            yield Write(self, resource, self.remembered(resource))

    @property
    def generation(self) -> int:
        """Moves on with every notification and every loss of the listening connection."""
        return self._generation

    async def principal(self, app: web.Application, token: str, *, lookup_allowed: bool = True) -> Principal:
        """The token's principal; raises tokens.InvalidToken for an unknown, revoked or expired one,
        and LookupRefused when only PostgreSQL could tell and ``lookup_allowed`` is false."""
        digest = hash_token(token)
        table = self._tokens if self._tokens_fresh() else await self._token_table(app)
        known = table.get(digest) if table is not None else None
        if known is not None:
            FROM_MEMORY.inc()
            if known.valid():
                return known.principal
            raise InvalidToken()
        # not in memory: unknown, or made since the tokens were read (its notification on its way)
        until = self._unknown.get(digest)
        if until is not None and time.monotonic() < until:
            FROM_MEMORY.inc()
            raise InvalidToken()
        if not lookup_allowed:
            raise LookupRefused()
        FROM_DATABASE.inc()
        generation = self._token_generation
        try:
            async with self.token_lookups, postgres.acquire(app) as conn:
                principal, _ = await tokens.authenticate(conn, token)
        except InvalidToken:
            if self.listening and generation == self._token_generation:
                if len(self._unknown) >= MAX_UNKNOWN:
                    self._unknown.clear()
                self._unknown[digest] = time.monotonic() + UNKNOWN_TOKEN_SECONDS
            raise
        return principal

    def valid_in_memory(self, token: str) -> Principal | None:
        """The token's principal if the tokens in memory are fresh and hold it valid; None
        otherwise (``principal`` then tells why, or looks it up)."""
        table = self._tokens
        if table is None or not self._tokens_fresh():
            return None
        known = table.get(hash_token(token))
        if known is None or not known.valid():
            return None
        FROM_MEMORY.inc()
        return known.principal

    async def _token_table(self, app: web.Application) -> dict[bytes, _Verified] | None:
        """Every token that may authenticate, by hash, while listening (None: not listening);
        read again when a notification dropped it or TOKENS_RECHECK_SECONDS passed. One read at
        a time: concurrent callers share it."""
        if not self.listening:
            return None
        if self._tokens_fresh():
            return self._tokens
        if self._tokens_loading is None or self._tokens_loading.done():
            self._tokens_loading = asyncio.ensure_future(self._load_tokens(app))
        return await asyncio.shield(self._tokens_loading)

    def _tokens_fresh(self) -> bool:
        """Whether the tokens in memory may be used as they are (checked before ``_token_table``
        is awaited: most requests need no coroutine for it)."""
        return (
            self.listening
            and self._tokens is not None
            and time.monotonic() - self._tokens_loaded_at < TOKENS_RECHECK_SECONDS
        )

    async def _load_tokens(self, app: web.Application) -> dict[bytes, _Verified]:
        FROM_DATABASE.inc()
        generation = self._token_generation
        async with self.token_lookups, postgres.acquire(app) as conn:
            rows = await tokens.live_tokens(conn)
        loaded = {digest: _Verified(principal, expires_at) for digest, (principal, expires_at) in rows.items()}
        if self.listening and generation == self._token_generation:
            self._tokens, self._tokens_loaded_at = loaded, time.monotonic()
            self._tokens_state += 1
        return loaded

    @property
    def tokens_state(self) -> int:
        """Moves on whenever the tokens in memory change; read it before a token is checked."""
        return self._tokens_state

    def tokens_unchanged(self, since: int) -> bool:
        """Whether a token checked at ``tokens_state`` ``since`` would be answered the same now
        (its expiry aside): the tokens in memory are the same, fresh, and listened for."""
        return since == self._tokens_state and self._tokens_fresh()

    # -- what makes it stale -----------------------------------------------------------------------

    def changed(self, *what: str) -> None:
        """Drop what changed: on a notification, and at once in the process that made the change."""
        self._generation += 1
        for name in what:
            if name == TOKENS:
                self._forget_tokens()  # and a held watch checks its token again
            else:
                self._values.pop(name, None)
        self._wake_watches()

    def _forget_tokens(self) -> None:
        self._token_generation += 1
        self._tokens_state += 1
        self._tokens = None
        self._unknown.clear()

    def _forget_everything(self) -> None:
        self._generation += 1
        self._values.clear()
        self._forget_tokens()
        self._wake_watches()

    def stop_watches(self) -> None:
        """Shutting down: answer every held watch now with what is current (docs/guarantees.md)."""
        self.stopping = True
        self._wake_watches()

    def _wake_watches(self) -> None:
        """Wake every held watch: they are woken in batches (``WAKE_BATCH``), in the order they
        began waiting. Python's cyclic garbage collector waits until the last batch is answered
        (COLLECTOR_PAUSE_SECONDS at most): with thousands of requests held, one full collection
        takes a sizeable part of a second and would hold up every answer behind it (reference
        counting still frees what they leave)."""
        waiting, self._waiting = self._waiting, {}
        self._deadlines = []
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        if not waiting:
            return
        already_waking = bool(self._waking)
        self._waking.extend(waiting)
        if not already_waking:
            if gc.isenabled():
                gc.disable()
                self._collector_paused_at = asyncio.get_running_loop().time()
            self._wake_next_batch()

    def _wake_next_batch(self) -> None:
        """Wake the next WAKE_BATCH watches; the next batch after these have been answered (their
        tasks run before a callback scheduled after them)."""
        waking = self._waking
        for _ in range(min(WAKE_BATCH, len(waking))):
            woken = waking.popleft()
            if not woken.done():
                woken.set_result(None)
        loop = asyncio.get_running_loop()
        paused_at = self._collector_paused_at
        if paused_at is not None and loop.time() - paused_at > COLLECTOR_PAUSE_SECONDS:
            self._resume_collector()
        loop.call_soon(self._wake_next_batch if waking else self._woken)

    def _woken(self) -> None:
        """The last batch has been answered (unless another wake-up began since)."""
        if not self._waking:
            self._resume_collector()

    def _resume_collector(self) -> None:
        if self._collector_paused_at is not None:
            self._collector_paused_at = None
            gc.enable()

    async def _changed_or(self, until: float) -> None:
        """Wait until something may have changed (``_wake_watches``), or the loop's time ``until``."""
        loop = asyncio.get_running_loop()
        woken = loop.create_future()
        self._waiting[woken] = None
        deadlines = self._deadlines
        heapq.heappush(deadlines, (until, next(self._order), woken))
        if deadlines[0][2] is woken:
            if self._deadline_timer is not None:
                self._deadline_timer.cancel()
            self._deadline_timer = loop.call_at(until, self._end_waits)
        try:
            await woken
        finally:
            self._waiting.pop(woken, None)

    def _end_waits(self) -> None:
        """The earliest deadline has come: wake the watches whose wait is over."""
        self._deadline_timer = None
        loop = asyncio.get_running_loop()
        now, deadlines = loop.time(), self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, _, woken = heapq.heappop(deadlines)
            if not woken.done():
                woken.set_result(None)
        if deadlines:
            self._deadline_timer = loop.call_at(deadlines[0][0], self._end_waits)

    async def watch(
        self,
        app: web.Application,
        resource: VersionedResource[V],
        value: V,
        wait: int,
        recheck: Callable[[], Awaitable[None]],
        token_expires_at: datetime | None = None,
    ) -> V | None:
        """A held read (``Prefer: wait``): until the resource's version moves on from ``value``'s,
        ``wait`` seconds pass or the process shuts down; returns what is current then (None: it
        was deleted). Everything a read of the resource depends on moves its version on (for the
        Spaces configuration: the fields, the secret, the enablement, an environment's deletion).
        ``recheck`` runs after every wake-up (a change of tokens wakes watches too, and so does
        ``token_expires_at``, which no notification announces): the caller's token checked again,
        whose error ends the watch. While nothing listens for changes, the watch reads again at
        least every WATCH_POLL_SECONDS."""
        WATCHES.inc()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait
            current: V | None = value
            while current is not None and current.version == value.version:
                now = loop.time()
                if deadline <= now or self.stopping:
                    break
                until = deadline if self.listening else min(deadline, now + WATCH_POLL_SECONDS)
                if token_expires_at is not None:
                    expires_in = (token_expires_at - datetime.now(UTC)).total_seconds()
                    until = min(until, now + max(expires_in, 0) + 0.01)
                await self._changed_or(until)
                await recheck()
                current = await self.read(app, resource)
        finally:
            WATCHES.dec()
        unchanged = current is not None and current.version == value.version
        (ENDED_UNCHANGED if unchanged else ENDED_CHANGED).inc()
        return current

    def notified(self, payload: str) -> None:
        """A change committed somewhere: drop what it names, unless memory holds that already."""
        change = changes.parse(payload)
        cached = self._values.get(change.name)
        if (
            change.version is not None
            and cached is not None
            and cached.id == change.id
            and cached.version >= change.version
        ):
            # this process wrote it (or a newer one) and holds it: nothing to drop (a read from
            # PostgreSQL in flight, maybe older, is not kept: memory is taken)
            return
        self.changed(change.name)

    def _on_notification(self, conn: object, pid: int, channel: str, payload: str) -> None:
        log.debug("notified of a change: %s", payload)
        NOTIFICATIONS.inc()
        self.notified(payload)

    def close(self) -> None:
        """The app is done: no watch is left to wake, and the garbage collector runs again."""
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        self._waking.clear()
        self._resume_collector()

    # -- the listening connection ------------------------------------------------------------------

    async def listen(self, dsn: str, connect_timeout: float) -> None:
        """Keep a listening connection up for as long as the app runs, reconnecting when it drops."""
        failures = 0
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    dsn, timeout=connect_timeout, server_settings={"application_name": "spacesvc-listener"}
                )
                lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                conn.add_termination_listener(functools.partial(_resolve, lost))
                await conn.add_listener(CHANNEL, self._on_notification)
                self._forget_everything()  # from here on, whatever is loaded is fresh
                self.listening = True
                if failures:
                    log.info("listening for changes again; reads are served from memory")
                failures = 0
                await self._watch(conn, lost)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                if failures == 0:
                    log.warning("not listening for changes (%s); every read goes to PostgreSQL", type(error).__name__)
            finally:
                self.listening = False
                self._forget_everything()
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)])
            failures += 1

    async def _watch(self, conn: asyncpg.Connection, lost: asyncio.Future[None]) -> None:
        """Return when the connection is lost, or stops answering within PING_TIMEOUT."""
        while not lost.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PING_SECONDS):
                    await asyncio.shield(lost)
                    return
            async with asyncio.timeout(PING_TIMEOUT):
                await conn.fetchval("SELECT 1")


class PerConfig(Generic[T]):
    """One value derived from a resource's value (a configuration), kept while the live state
    hands out the same object (it hands out a new one when the resource changes): the key is the
    objects' identity, never equality. A value read from PostgreSQL is a new object each time, so
    nothing is kept for it."""

    def __init__(self) -> None:
        self._key: tuple[object, ...] = ()
        self._value: T | None = None

    def get(self, config: object, *also: object) -> T | None:
        """The value kept for ``config`` (and ``also``: e.g. the backend it was derived with), or None."""
        key = self._key
        if len(key) != 1 + len(also) or key[0] is not config:
            return None
        for kept, given in zip(key[1:], also, strict=True):
            if kept is not given:
                return None
        return self._value

    def keep(self, value: T, config: object, *also: object) -> T:
        self._key, self._value = (config, *also), value
        return value


def _retrieve(future: asyncio.Future[Any]) -> None:
    """A shared read's error is raised to those who wait for it; none may be left."""
    if not future.cancelled():
        future.exception()


def _resolve(future: asyncio.Future[None], *_: object) -> None:
    if not future.done():
        future.set_result(None)


LIVE: web.AppKey[LiveState] = web.AppKey("live_state")


async def live_ctx(app: web.Application) -> AsyncIterator[None]:
    state = LiveState()
    app[LIVE] = state
    settings = app[SETTINGS]
    state.token_lookups = asyncio.Semaphore(max(1, settings.db_pool_max_size // 2))
    assert settings.database_url is not None
    task = asyncio.create_task(state.listen(settings.database_url, settings.db_connect_timeout), name="live-listener")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        state.close()
