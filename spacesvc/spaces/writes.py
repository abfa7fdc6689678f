"""This process's writes of the Spaces configuration, by group commit (``spacesvc.group_commit``):
the writes that arrive while a batch is being written go together into the next, which
``service.write_configs`` applies in order in one transaction. Every write is answered once its
batch has committed, with the version it made; the process keeps the last one in memory, so it
sees its own writes at once."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from spacesvc import postgres
from spacesvc.group_commit import GroupCommit, unavailable_or
from spacesvc.live import LIVE
from spacesvc.secret_backend import SECRET_BACKEND
from spacesvc.spaces import service
from spacesvc.spaces.model import WriteOutcome
from spacesvc.spaces.resource import SPACES
from spacesvc.spaces.service import ConfigWrite

# The most writes one transaction applies: a burst is written in several, each short.
MAX_BATCH = 100

SPACES_WRITES: web.AppKey[GroupCommit[ConfigWrite, WriteOutcome]] = web.AppKey("spaces_writes")


async def spaces_writes_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context (after the pool, the live state and the secret backend): the writer, its
    last batch committed before they close."""

    async def write(writes: list[ConfigWrite]) -> list[WriteOutcome | Exception]:
        async with app[LIVE].writing(SPACES) as turn, postgres.acquire(app) as conn:
            outcomes = await service.write_configs(conn, app[SECRET_BACKEND], writes, remembered=turn.remembered)
            written = [outcome for outcome in outcomes if isinstance(outcome, WriteOutcome) and outcome.changed]
            if written:
                turn.kept(written[-1].config)
        return outcomes

    writes = GroupCommit(
        write, name="spaces-writes", max_batch=MAX_BATCH, failed=unavailable_or("the configuration was not written")
    )
    app[SPACES_WRITES] = writes
    try:
        yield
    finally:
        await writes.close()
