"""Group commit: jobs that arrive while a batch is being written wait for the next batch, and each
batch is written together (one transaction, one commit).

A lone job is written at once (no timer, no added wait); under load a batch holds every job that
arrived during the previous one's round trip, at most ``max_batch``. Each job's caller is
answered once its batch has committed, so what it is told is as durable as if it had been written
alone. The writer runs as a task of its own: a caller cancelled meanwhile (its client left) does
not cancel the batch it rides in, and a caller waiting holds no pool connection (holding one would
let waiting requests take the whole pool from the writer they wait for).

The write returns one outcome per job, in order: a result, or the exception that job raises (its
own, such as a failed precondition). A write that raises fails its whole batch: each caller then
raises an error of its own made by ``failed`` (one instance raised by every caller would collect
all their tracebacks).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from spacesvc.errors import Unavailable

J = TypeVar("J")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class _Raised:
    """What a job raises instead of returning: its own error, or its batch's (``shared``)."""

    error: BaseException
    shared: bool


def unavailable_or(message: str) -> Callable[[BaseException], BaseException]:
    """The usual ``failed``: a batch that met an unavailable dependency says so in each caller (a
    503 naming it); any other failure is a failure of each caller's request, ``message`` saying
    what was not written."""

    def failed(error: BaseException) -> BaseException:
        if isinstance(error, Unavailable):
            return Unavailable(error.dependency, str(error), hint=error.hint)
        return RuntimeError(message)

    return failed


class GroupCommit(Generic[J, R]):
    """Writes jobs in batches (see the module's docstring); ``name`` names the writer's task."""

    def __init__(
        self,
        write: Callable[[list[J]], Awaitable[Sequence[R | BaseException]]],
        *,
        name: str,
        max_batch: int,
        failed: Callable[[BaseException], BaseException],
    ) -> None:
        self._write = write
        self._name = name
        self._max_batch = max_batch
        self._failed = failed
        self._waiting: list[tuple[J, asyncio.Future[R | _Raised]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, job: J) -> R:
        """The job's result once its batch has committed; raises its own error, or one made by
        ``failed`` when the batch could not be written."""
        done: asyncio.Future[R | _Raised] = asyncio.get_running_loop().create_future()
        self._waiting.append((job, done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_batches(), name=self._name)
        outcome = await asyncio.shield(done)
        if isinstance(outcome, _Raised):
            if outcome.shared:
                raise self._failed(outcome.error) from outcome.error
            raise outcome.error
        return outcome

    async def close(self) -> None:
        """Let the batches under way finish (their callers are answered)."""
        if self._writer is not None:
            await asyncio.shield(self._writer)

    async def _write_batches(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._max_batch]
                self._waiting = self._waiting[self._max_batch :]
                try:
                    outcomes = await self._write([job for job, _ in batch])
                    if len(outcomes) != len(batch):
                        raise RuntimeError(f"{self._name}: {len(outcomes)} outcomes for {len(batch)} jobs")
                except asyncio.CancelledError:
                    for _, waiter in [*batch, *self._waiting]:
                        waiter.cancel()
                    self._waiting = []
                    raise
                except Exception as error:  # handed to each caller, which raises its own
                    for _, waiter in batch:
                        waiter.set_result(_Raised(error, shared=True))
                    continue
                for (_, waiter), outcome in zip(batch, outcomes, strict=True):
                    waiter.set_result(_Raised(outcome, shared=False) if isinstance(outcome, BaseException) else outcome)
        finally:
            self._writer = None
