"""A partition producer fenced while its transaction's batches are being sent (aiokafka
turns the transaction fatal on the first batch's refused AddPartitionsToTxn; the next
send_batch then raises IllegalOperation "not in transaction"): the commit fails as fenced,
the partition is released and retaken, and the process does not stop. The fault matrix saw
the IllegalOperation end two gateway processes (exit 1) when rebalances under network faults
and a paused instance had two owners start producers for one partition in turn."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import IllegalOperation

from hitl_gateway.errors import FencedError, KafkaUnavailable
from hitl_gateway.settings import KafkaSettings
from hitl_gateway.sink import Outgoing, PartitionProducer


class _Batch:
    def append(self, **_: Any) -> object:
        return object()

    def close(self) -> None:
        pass


class _Manager:
    def __init__(self) -> None:
        self.fatal = False

    def is_fatal_error(self) -> bool:
        return self.fatal

    def error_transaction(self, exc: BaseException) -> None:
        pass

    def fatal_error(self, exc: BaseException) -> None:
        self.fatal = True

    def wait_for_transaction_end(self) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class _FencedMidSend:
    """The first batch goes out; the coordinator's refusal makes the transaction fatal
    before the second batch is handed over."""

    def __init__(self) -> None:
        self._txn_manager = _Manager()
        self._message_accumulator = SimpleNamespace(_batches={})
        self.sent = 0
        self.stopped = False

    async def begin_transaction(self) -> None:
        pass

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> Any:
        if self._txn_manager.fatal:
            raise IllegalOperation("Can't send messages while not in transaction")
        self.sent += 1
        self._txn_manager.fatal_error(RuntimeError("ProducerFenced"))
        return asyncio.get_running_loop().create_future()

    async def abort_transaction(self) -> None:
        raise AssertionError("Invalid state transition FATAL_ERROR -> ABORTING_TRANSACTION")

    async def stop(self) -> None:
        self.stopped = True


async def test_fenced_between_two_batches_fails_as_fenced() -> None:
    producer = PartitionProducer(KafkaSettings(), TopicPartition("outputs", 3), 1_000_000)
    fake = _FencedMidSend()
    producer._producer = fake  # type: ignore[assignment]
    records = [
        Outgoing("delivered", b"a", b"a", [], partition=3),
        Outgoing("audit", b"b", b"b", [], partition=3),
    ]
    with pytest.raises(FencedError):
        await producer.commit(records, {TopicPartition("outputs", 3): 10}, "group")
    assert fake.sent == 1
    assert fake.stopped
    assert not producer.started


class _NoProducerId(_FencedMidSend):
    """A producer whose id never comes (aiokafka's begin_transaction waits for it)."""

    async def begin_transaction(self) -> None:
        await asyncio.Event().wait()


async def test_a_producer_that_never_gets_an_id_is_dropped_not_waited_on() -> None:
    settings = KafkaSettings(request_timeout_ms=1_000)
    producer = PartitionProducer(settings, TopicPartition("outputs", 3), 1_000_000)
    fake = _NoProducerId()
    producer._producer = fake  # type: ignore[assignment]
    records = [Outgoing("delivered", b"a", b"a", [], partition=3)]
    with pytest.raises(KafkaUnavailable):
        await asyncio.wait_for(
            producer.commit(records, {TopicPartition("outputs", 3): 10}, "group"), 10
        )
    assert fake.sent == 0
    assert fake.stopped
    assert not producer.started  # the next start() makes a new producer
