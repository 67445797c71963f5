"""A zombie's transactional producer, fenced by the partition's new owner, fails its commit
with FencedError and is dropped without leaving errors behind for asyncio to log ("Future
exception was never retrieved": the fault matrix's paused instances logged one per batch in
flight, at ERROR, each with a traceback)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from aiokafka import TopicPartition

from hitl_gateway.errors import FencedError
from hitl_gateway.settings import Settings
from hitl_gateway.sink import Outgoing, PartitionProducer


async def test_a_fenced_owner_is_dropped_quietly(settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    logged: list[str] = []

    def handler(_: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        logged.append(str(context.get("message")) + repr(context.get("future"))[:300])

    previous = loop.get_exception_handler()
    loop.set_exception_handler(handler)
    tp = TopicPartition(settings.topics.outputs, 0)
    group = settings.kafka.group_id
    records = [Outgoing(settings.topics.delivered, b"v%d" % i, b"k%d" % i, []) for i in range(50)]
    zombie = PartitionProducer(settings.kafka, tp, 1_000_000)
    owner = PartitionProducer(settings.kafka, tp, 1_000_000)
    try:
        await zombie.start()
        await zombie.commit(records, {tp: 1}, group)
        await owner.start()  # init_transactions with the same id: the zombie is fenced
        with pytest.raises(FencedError):
            await zombie.commit(records, {tp: 2}, group)
        assert not zombie.started
        await owner.commit(records, {tp: 2}, group)
    finally:
        await zombie.stop()
        await owner.stop()
        del zombie
        for _ in range(3):
            gc.collect()
            await asyncio.sleep(0.1)
        loop.set_exception_handler(previous)
    assert not [m for m in logged if "never retrieved" in m], logged
