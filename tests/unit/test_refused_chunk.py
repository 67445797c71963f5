"""A transaction whose first chunk the broker refused (a missing WRITE ACL on an output):
aiokafka moves the transaction to an abortable error that nobody awaits until the commit,
and the next chunk's send then meets IllegalOperation ("not in transaction"). The send must
report the refusal itself, so the gateway stops naming the ACL instead of retrying."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import IllegalOperation, TopicAuthorizationFailedError

from hitl_gateway.errors import KafkaAccessError
from hitl_gateway.settings import KafkaSettings
from hitl_gateway.sink import Outgoing, PartitionProducer

from .test_fenced_mid_send import _Batch, _FencedMidSend, _Manager


class _AbortableManager(_Manager):
    def __init__(self) -> None:
        super().__init__()
        self.waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wait_for_transaction_end(self) -> asyncio.Future[None]:
        return self.waiter


class _RefusedFirstChunk(_FencedMidSend):
    def __init__(self) -> None:
        super().__init__()
        self._txn_manager = _AbortableManager()
        self.aborted = False

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> Any:
        if self._txn_manager.waiter.done():
            raise IllegalOperation("Can't send messages while not in transaction")
        self.sent += 1
        return asyncio.get_running_loop().create_future()

    def refuse(self, exc: BaseException) -> None:
        """The broker's answer to the first chunk arrives: an abortable error."""
        self._txn_manager.waiter.set_exception(exc)

    async def abort_transaction(self) -> None:
        self.aborted = True


async def _two_chunks(producer: PartitionProducer, fake: _RefusedFirstChunk) -> None:
    async with producer.transaction() as txn:
        await txn.send([Outgoing("delivered", b"a", b"a", [], partition=3)])
        fake.refuse(TopicAuthorizationFailedError("delivered"))
        await txn.send([Outgoing("delivered", b"b", b"b", [], partition=3)])
        await txn.commit({TopicPartition("outputs", 3): 2}, "group")


async def test_a_refused_earlier_chunk_is_reported_as_the_refusal() -> None:
    producer = PartitionProducer(KafkaSettings(), TopicPartition("outputs", 3), 1_000_000)
    fake = _RefusedFirstChunk()
    producer._producer = fake  # type: ignore[assignment]
    # Without the check: IllegalOperation, which the lane takes for a bug (exit 1).
    with pytest.raises(KafkaAccessError, match="TOPIC_AUTHORIZATION_FAILED"):
        await _two_chunks(producer, fake)
    assert fake.sent == 1
    assert fake.aborted
