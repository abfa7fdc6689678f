"""The log writer batches lines per event-loop turn: no line is lost or reordered, whichever loop
(or none) the process runs."""

from __future__ import annotations

import asyncio
import io

import pytest

from spacesvc.logs import LineWriter

pytestmark = pytest.mark.unit


async def _log_in_one_turn(writer: LineWriter, *lines: bytes) -> None:
    for line in lines:
        writer.write(line)
    await asyncio.sleep(0)  # the turn ends: the batch is written


def test_lines_logged_under_one_event_loop_then_another_then_none_all_reach_the_stream_in_order() -> None:
    stream = io.BytesIO()
    writer = LineWriter(stream)
    asyncio.run(_log_in_one_turn(writer, b"first\n", b"second\n"))
    asyncio.run(_log_in_one_turn(writer, b"third\n"))  # a new loop in the same thread
    writer.write(b"fourth\n")  # no loop running (the CLI): written at once
    assert stream.getvalue() == b"first\nsecond\nthird\nfourth\n"
