"""The log's writer (``spacesvc.logs.LineWriter``): the lines of one event-loop turn reach the
stream together, in order, by the end of the turn; a line logged where no loop runs is written at
once, and none is lost when a loop stops with its lines' write still scheduled."""

from __future__ import annotations

import asyncio
import io

import pytest

from spacesvc.logs import LineWriter, log_timestamp

pytestmark = pytest.mark.unit


class Stream(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writes += 1
        return super().write(data)


def test_a_turns_lines_are_written_together_in_order_and_none_is_lost_across_loops() -> None:
    stream = Stream()
    writer = LineWriter(stream)

    async def one_turn(first: int) -> None:
        for number in range(first, first + 3):
            writer.write(b"%d\n" % number)
        assert stream.writes == writes_before  # not yet: at the end of the turn
        await asyncio.sleep(0)

    writes_before = 0
    asyncio.run(one_turn(1))
    assert stream.getvalue() == b"1\n2\n3\n" and stream.writes == 1

    async def stops_before_its_turn_ends() -> None:
        writer.write(b"4\n")
        asyncio.get_running_loop().stop()

    loop = asyncio.new_event_loop()
    stopping = loop.create_task(stops_before_its_turn_ends())
    loop.run_forever()  # stops with the write of "4" still scheduled
    loop.close()
    assert stopping.done()
    writes_before = stream.writes
    asyncio.run(one_turn(5))  # another loop in the same thread: "4" comes with its lines
    assert stream.getvalue() == b"1\n2\n3\n4\n5\n6\n7\n"
    writer.write(b"8\n")  # no loop runs: at once
    assert stream.getvalue().endswith(b"7\n8\n")


def test_log_timestamps_are_utc_with_milliseconds() -> None:
    assert log_timestamp(1767323045.678) == "2026-01-02T03:04:05.678Z"
    assert log_timestamp(1767323045.6785) == "2026-01-02T03:04:05.678Z"
    assert log_timestamp(1767323046.001) == "2026-01-02T03:04:06.001Z"
