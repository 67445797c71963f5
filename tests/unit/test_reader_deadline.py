"""A partition read (hold index restore, audit chain head) that cannot finish ends at its
deadline instead of holding the reader, and with it every partition take, without end:
aiokafka's ``position`` waits in a loop while an offset reset keeps failing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition

from hitl_gateway.errors import KafkaUnavailable
from hitl_gateway.recovery import Reader
from hitl_gateway.settings import KafkaSettings

TP = TopicPartition("hitl.holds", 2)


class _NoPosition:
    """A consumer whose offset reset never succeeds: ``position`` never returns."""

    def __init__(self) -> None:
        self.stopped = False

    def assign(self, partitions: list[TopicPartition]) -> None:
        pass

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 40 for tp in partitions}

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        pass

    def seek(self, tp: TopicPartition, offset: int) -> None:
        pass

    async def position(self, tp: TopicPartition) -> int:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def stop(self) -> None:
        self.stopped = True


async def test_a_read_that_cannot_finish_times_out_and_drops_the_consumer() -> None:
    reader = Reader(KafkaSettings())
    stuck = _NoPosition()
    reader._consumer = stuck  # type: ignore[assignment]
    with pytest.raises(KafkaUnavailable, match=r"timed out after 0\.5 s; the reader is made anew"):
        await asyncio.wait_for(reader.read(TP, None, timeout_s=0.5), 10)
    assert stuck.stopped
    assert reader._consumer is None  # the next read starts a new consumer
    # The lock is free again: another partition's read is not stuck behind this one.
    second = _NoPosition()
    reader._consumer = second  # type: ignore[assignment]
    with pytest.raises(KafkaUnavailable):
        await asyncio.wait_for(reader.read(TP, 3, timeout_s=0.2), 10)


async def test_a_read_with_nothing_to_read_returns_at_once() -> None:
    reader = Reader(KafkaSettings())
    consumer: Any = _NoPosition()
    reader._consumer = consumer
    assert await reader.read(TP, 40) == ([], 40)
    assert reader._consumer is consumer
