"""Stage 0: Kafka consumer wrapper. Batches from ``getmany`` and partition ownership events.

``read_committed``, no auto-commit: offsets are committed only inside producer transactions.
"""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from hitl_gateway import poison
from hitl_gateway.errors import (
    KAFKA_FAULTS,
    InfrastructureError,
    KafkaAccessError,
    KafkaUnavailable,
    kafka_errors,
)
from hitl_gateway.settings import KafkaSettings

log = structlog.get_logger(__name__)

Batch = dict[TopicPartition, list[Any]]  # aiokafka ConsumerRecord is untyped


class PartitionOwner(Protocol):
    """Told when this instance gains or loses input partitions (called inside the rebalance)."""

    async def partitions_assigned(self, tps: set[TopicPartition]) -> None: ...

    async def partitions_revoked(self, tps: set[TopicPartition]) -> None: ...


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped base
    def __init__(self, owner: PartitionOwner) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._owner.partitions_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._owner.partitions_assigned(set(assigned))


def fetcher_error(consumer: AIOKafkaConsumer) -> BaseException | None:
    """Why the consumer's background fetch task ended, if it has. aiokafka (0.14) ends that
    task for good on an error it does not expect in a fetch step (under uvloop, a request
    written to a connection that has just been reset raises ``RuntimeError``: "unable to
    perform operation on <TCPTransport closed=True ...>"). It logs "Unexpected error in
    fetcher routine", nothing starts the task again, ``getmany`` returns nothing from then
    on, and the group still counts the member as alive (its heartbeats are another task),
    so its partitions stall until the next rebalance moves them: the fault matrix's S7
    found this (docs/reliability.md)."""
    task = getattr(getattr(consumer, "_fetcher", None), "error_future", None)
    if task is None or not task.done() or task.cancelled():
        return None
    return task.exception() or RuntimeError("the fetch task returned")


async def _close(consumer: AIOKafkaConsumer) -> None:
    """``consumer.stop()``, also when its fetcher has ended: aiokafka's close awaits that
    task and raises its error after leaving the group but before closing the connections."""
    try:
        await consumer.stop()
    except Exception:
        if fetcher_error(consumer) is None:
            raise
        await consumer._client.close()


class Source:
    def __init__(self, settings: KafkaSettings, topics: list[str], owner: PartitionOwner) -> None:
        self._settings = settings
        self._topics = topics
        self._owner = owner
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        if self._consumer is not None:
            return
        s = self._settings
        # A record aiokafka's parser rejects is isolated instead of failing getmany (poison.py).
        poison.install(s.poison_records)
        consumer = AIOKafkaConsumer(
            client_id=s.client_id,
            group_id=s.group_id,
            group_instance_id=s.group_instance_id,
            enable_auto_commit=False,
            isolation_level="read_committed",
            # Co-partitioned topics: the range assignor gives partition p of every topic to
            # the same member, which the per-partition ownership relies on.
            partition_assignment_strategy=(RangePartitionAssignor,),
            auto_offset_reset="earliest",
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_poll_interval_ms=s.max_poll_interval_ms,
            request_timeout_ms=max(s.request_timeout_ms, s.session_timeout_ms + 5_000),
            fetch_max_bytes=s.fetch_max_bytes,
            max_partition_fetch_bytes=s.max_partition_fetch_bytes,
            fetch_min_bytes=s.fetch_min_bytes,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            **s.consumer_options(),
        )
        try:
            with kafka_errors("starting the consumer"):
                await asyncio.wait_for(consumer.start(), s.request_timeout_ms / 1000)
        except (InfrastructureError, KafkaAccessError):
            await consumer.stop()
            raise
        consumer.subscribe(self._topics, listener=_Listener(self._owner))
        self._consumer = consumer

    async def stop(self) -> None:
        """Leave the group; the revoke callback runs first, so owned partitions are released."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await _close(consumer)

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise KafkaUnavailable("the consumer is not started")
        return self._consumer

    async def fetch(self, timeout_ms: int) -> Batch:
        """Every record the consumer has buffered (waiting up to ``timeout_ms`` for some).
        A consumer whose fetcher has ended is made anew (see ``fetcher_error``)."""
        if self._consumer is None:
            await self.start()  # the last one was dropped; a failure here is retried
        consumer = self.consumer
        ended = fetcher_error(consumer)
        if ended is not None:
            await self._renew(consumer, ended)
        with kafka_errors("fetch"):
            batch: Batch = await consumer.getmany(timeout_ms=timeout_ms)
        return batch

    async def _renew(self, consumer: AIOKafkaConsumer, ended: BaseException) -> NoReturn:
        """Leave the group with the broken consumer (its partitions are revoked as in any
        rebalance) and drop it: the next fetch starts a new one, which joins again."""
        log.error("consumer_fetcher_ended", error=repr(ended))
        try:
            await _close(consumer)
        finally:
            self._consumer = None
        raise KafkaUnavailable(f"the consumer's fetcher ended ({ended!r}); it is made anew")

    def pause(self, tps: set[TopicPartition]) -> None:
        """Fetch nothing more for ``tps``; what is buffered for them is dropped (positions
        are kept, so it is fetched again after ``resume``)."""
        self.consumer.pause(*tps)

    def resume(self, tps: set[TopicPartition]) -> None:
        self.consumer.resume(*tps)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit offsets through the group (at-least-once mode; exactly-once commits them in
        the transaction instead)."""
        with kafka_errors("offset commit"):
            await self.consumer.commit(offsets)

    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset, read from the broker now (never a cached value)."""
        with kafka_errors(f"reading {tp}'s committed offset"):
            offset: int | None = await self.consumer.committed(tp)
        return offset

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Rewind or advance; buffered records for ``tp`` are discarded by aiokafka."""
        self.consumer.seek(tp, offset)

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        with kafka_errors(f"seeking {tp} to its beginning"):
            await self.consumer.seek_to_beginning(tp)

    async def ping(self, timeout_s: float) -> bool:
        """A real metadata request to the cluster: is a broker answering?"""
        try:
            await asyncio.wait_for(self.consumer.topics(), timeout_s)
        except KAFKA_FAULTS:
            return False
        return True

    async def lag(self) -> list[tuple[TopicPartition, int, int]]:
        """Per assigned partition: records behind the last stable offset, and how far the
        last stable offset trails the high watermark (an open transaction holds it back)."""
        consumer = self.consumer
        out = []
        for tp in sorted(consumer.assignment()):
            high = consumer.highwater(tp)
            stable = consumer.last_stable_offset(tp)
            if high is None or stable is None:
                continue  # no fetch response yet
            with kafka_errors("lag"):
                position = await consumer.position(tp)
            out.append((tp, max(0, stable - position), max(0, high - stable)))
        return out
