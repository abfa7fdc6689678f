"""Held watches in one process (``LiveState.watch``): a change answers every one of them, in the
order they began waiting, without holding up the rest of the process; a wait that ends answers
only its own watch."""

from __future__ import annotations

import asyncio
import gc
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from aiohttp import web

from spacesvc import live as live_module
from spacesvc.changes import TOKENS
from spacesvc.live import LiveState
from spacesvc.spaces.model import SpacesConfig, SpacesFields
from spacesvc.spaces.resource import SPACES

pytestmark = pytest.mark.unit


def config(version: int) -> SpacesConfig:
    now = datetime.now(UTC)
    return SpacesConfig("c1", SpacesFields("KEY", "ams3", None, ("backups",)), "db", True, None, version, now, now, "a")


async def holding(value: SpacesConfig) -> LiveState:
    live = LiveState()
    live.listening = True
    async with live.writing(SPACES) as write:
        write.kept(value)
    return live


async def checked() -> None:
    pass


async def test_a_change_answers_every_held_watch_in_order_and_the_process_keeps_serving() -> None:
    first = config(1)
    live = await holding(first)
    app = web.Application()
    answered: list[object] = []

    async def watcher(number: int) -> None:
        current = await live.watch(app, SPACES, first, 30, checked)
        assert current is not None and current.version == 2
        answered.append(number)

    count = 3 * live_module.WAKE_BATCH + 7
    watchers = [asyncio.create_task(watcher(number)) for number in range(count)]
    await asyncio.sleep(0.05)
    assert not answered  # all held
    async with live.writing(SPACES) as write:
        write.kept(replace(first, version=2))

    async def another_request() -> None:
        answered.append("another request")

    other = asyncio.create_task(another_request())
    await asyncio.wait_for(asyncio.gather(*watchers, other), 5)
    assert [number for number in answered if number != "another request"] == list(range(count))
    assert answered.index("another request") < count  # served between the batches, not after all
    assert gc.isenabled()  # the collector waited for the answers only


async def test_a_wait_that_ends_answers_its_own_watch_only() -> None:
    first = config(1)
    live = await holding(first)
    app = web.Application()
    short = asyncio.create_task(live.watch(app, SPACES, first, 1, checked))
    long = asyncio.create_task(live.watch(app, SPACES, first, 30, checked))
    current = await asyncio.wait_for(short, 3)
    assert current is not None and current.version == 1  # unchanged: the client is answered 304
    assert not long.done()
    async with live.writing(SPACES) as write:
        write.kept(replace(first, version=2))
    current = await asyncio.wait_for(long, 1)
    assert current is not None and current.version == 2


async def test_changes_that_keep_coming_do_not_keep_the_garbage_collector_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_module, "WAKE_BATCH", 1)
    monkeypatch.setattr(live_module, "COLLECTOR_PAUSE_SECONDS", 0.05)
    first = config(1)
    live = await holding(first)
    app = web.Application()
    watchers = [asyncio.create_task(live.watch(app, SPACES, first, 30, checked)) for _ in range(20)]
    try:
        await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        until = loop.time() + 0.3
        while loop.time() < until:
            live.changed(TOKENS)  # wakes every watch; the configuration is unchanged, so they wait again
            await asyncio.sleep(0)
        assert gc.isenabled()
        assert not any(watcher.done() for watcher in watchers)
    finally:
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        live.close()
        gc.enable()
