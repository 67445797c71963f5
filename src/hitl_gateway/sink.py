"""Stage 3: Kafka producer wrapper. One transactional producer per owned input partition
(or, with ``exactly_once`` off, one idempotent producer whose offsets the group commits).

aiokafka's ``send_offsets_to_transaction`` commits without the consumer group generation
(no KIP-447), so a zombie that lost its partition is fenced only through its transactional
id. Deriving that id from (group, topic, partition) makes the new owner's
``init_transactions`` fence the old owner and abort whatever it left open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiokafka.producer.sender as aiokafka_sender
import structlog
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import IllegalOperation, InvalidProducerEpoch, ProducerFenced
from aiokafka.partitioner import DefaultPartitioner

from hitl_gateway.errors import (
    KAFKA_FAULTS,
    FencedError,
    InfrastructureError,
    KafkaAccessError,
    KafkaUnavailable,
    kafka_errors,
    kafka_failure,
)
from hitl_gateway.settings import KafkaSettings

log = structlog.get_logger(__name__)

Headers = list[tuple[str, bytes]]
_FENCED = (ProducerFenced, InvalidProducerEpoch)
# Room for headers around a maximum-size record.
_REQUEST_OVERHEAD_BYTES = 64 * 1024
# Record batches built per topic-partition; below the topics' max.message.bytes (a batch
# always takes its first record, so a maximum-size record still goes alone).
_BATCH_BYTES = 512 * 1024
_PARTITIONER = DefaultPartitioner()
# An abort may also meet aiokafka's assertion that refuses it from a fatal state.
_ABORT_FAULTS: tuple[type[BaseException], ...] = (*KAFKA_FAULTS, AssertionError)


@dataclass(slots=True)
class Outgoing:
    """One record to produce inside a partition's transaction."""

    topic: str
    value: bytes | None
    key: bytes | None
    headers: Headers
    partition: int | None = None  # None: the key's partition
    timestamp_ms: int | None = None  # None: the time of sending
    # A hold record's metadata as built (its header holds the same as JSON): the index takes
    # it from here after the commit instead of parsing the header back.
    hold: Any = None


def transactional_id(settings: KafkaSettings, tp: TopicPartition) -> str:
    return f"{settings.transactional_id_prefix}.{settings.group_id}.{tp.topic}.{tp.partition}"


class PartitionProducer:
    """Owns the transactional id of one input partition while this instance owns it."""

    def __init__(self, settings: KafkaSettings, tp: TopicPartition, max_record_bytes: int) -> None:
        self.tp = tp
        self.transactional_id = transactional_id(settings, tp)
        self._settings = settings
        self._max_request_size = max_record_bytes + _REQUEST_OVERHEAD_BYTES
        self._producer: AIOKafkaProducer | None = None
        self._timeout_s = settings.request_timeout_ms / 1000
        self._partitions: dict[str, list[int]] = {}  # per keyed topic, for the partitioner

    async def start(self) -> None:
        """Create the producer; ``start()`` runs ``init_transactions``, fencing older owners."""
        if self._producer is not None:
            return
        s = self._settings
        tune_transaction_backoff(s.concurrent_transactions_backoff_ms)
        producer = AIOKafkaProducer(
            client_id=f"{s.client_id}-p{self.tp.partition}",
            transactional_id=self.transactional_id if s.exactly_once else None,
            enable_idempotence=True,
            transaction_timeout_ms=s.transaction_timeout_ms,
            request_timeout_ms=s.request_timeout_ms,
            linger_ms=s.linger_ms,
            compression_type=s.compression_type,
            max_request_size=self._max_request_size,
            max_batch_size=_BATCH_BYTES,
            **s.producer_options(),
        )
        _mark_waiter_errors_seen(producer)
        try:
            with kafka_errors(f"starting producer {self.transactional_id}"):
                await asyncio.wait_for(producer.start(), self._timeout_s)
        except (InfrastructureError, KafkaAccessError):
            await _close_quietly(producer)
            raise
        self._producer = producer

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _close_quietly(producer, self._timeout_s)

    async def commit(
        self, records: Sequence[Outgoing], offsets: dict[TopicPartition, int], group_id: str
    ) -> dict[TopicPartition, int]:
        """Produce ``records`` and commit ``offsets`` atomically, or raise with nothing committed.
        Returns the last offset written in each topic-partition.

        On failure the transaction is aborted; if even that fails the producer is dropped and
        the next ``start()`` re-initialises it (a stuck producer never recovers by itself).
        """
        producer = self._producer
        if producer is None:
            raise KafkaUnavailable(f"producer for {self.tp} is not started")
        if not self._settings.exactly_once:
            # At-least-once: produced and acknowledged; the caller commits the offsets.
            with kafka_errors(f"producing for {self.tp}"):
                return await self._produce(producer, records)
        try:
            try:
                await asyncio.wait_for(producer.begin_transaction(), self._timeout_s)
            except TimeoutError:
                # aiokafka waits for a producer id without end: a producer that cannot get
                # one never recovers by itself (aio-libs/aiokafka#1017), so it is dropped
                # and the next start() makes a new one.
                await self.stop()
                raise
            try:
                written = await self._produce(producer, records)
                # The offsets join the transaction once its records are acknowledged, not
                # while they are in flight: Kafka 3.6+ verifies a transaction's first write
                # to each partition with the coordinator, and one that meets the coordinator
                # still persisting AddOffsetsToTxn is refused as NOT_ENOUGH_REPLICAS and
                # retried after the client's backoff (measured at 2,000 records/s: 782
                # retries in 45 s and a p99 of 173 ms, against none and 89 ms in turn,
                # drain throughput the same; docs/deploy.md). Side transactions (SLA
                # escalations) consume nothing.
                if offsets:
                    await asyncio.wait_for(
                        producer.send_offsets_to_transaction(offsets, group_id), self._timeout_s
                    )
                await asyncio.wait_for(producer.commit_transaction(), self._timeout_s)
            except BaseException as exc:
                fatal = _fatal(producer)
                await self._abort(fenced=isinstance(exc, _FENCED) or fatal)
                if fatal and isinstance(exc, IllegalOperation):
                    # Fenced while this transaction's batches were being sent: the next
                    # send finds the transaction gone ("not in transaction"), not the fence.
                    raise FencedError(f"{self.transactional_id} was fenced mid-send") from exc
                raise
        except _FENCED as exc:
            raise FencedError(f"{self.transactional_id} was fenced by a newer owner") from exc
        except KAFKA_FAULTS as exc:  # a refused ACL stops the gateway; the rest is retried
            raise kafka_failure(f"transaction on {self.tp}", exc) from exc
        return written

    async def _produce(
        self,
        producer: AIOKafkaProducer,
        records: Sequence[Outgoing],
    ) -> dict[TopicPartition, int]:
        """Produce ``records`` and wait for every acknowledgement: the last offset written in
        each topic-partition."""
        sent = await self._send_batches(producer, records)
        waits = [future for _, _, future in sent]
        done = await asyncio.wait_for(asyncio.gather(*waits), self._timeout_s)
        acks = done[: len(sent)]  # each batch's acknowledgement carries its base offset
        return {tp: ack.offset + count - 1 for (tp, count, _), ack in zip(sent, acks, strict=True)}

    async def _send_batches(
        self, producer: AIOKafkaProducer, records: Sequence[Outgoing]
    ) -> list[tuple[TopicPartition, int, asyncio.Future[Any]]]:
        """Records grouped per topic-partition (in order) into record batches built here, one
        future per batch rather than per record: (partition, records, future) per batch."""
        groups: dict[tuple[str, int], list[Outgoing]] = {}
        for o in records:
            partition = o.partition
            if partition is None:  # keyed: the producer's default partitioner, as send() does
                partition = await self._partition_for(producer, o.topic, o.key)
            groups.setdefault((o.topic, partition), []).append(o)
        sent: list[tuple[TopicPartition, int, asyncio.Future[Any]]] = []
        for (topic, partition), outs in groups.items():
            tp = TopicPartition(topic, partition)
            batch, count = producer.create_batch(), 0
            for o in outs:
                appended = batch.append(
                    key=o.key, value=o.value, timestamp=o.timestamp_ms, headers=o.headers
                )
                if appended is None:  # full: send it; a batch always takes its first record
                    sent.append((tp, count, await self._send(producer, batch, tp)))
                    batch, count = producer.create_batch(), 0
                    batch.append(key=o.key, value=o.value, timestamp=o.timestamp_ms,
                                 headers=o.headers)  # fmt: skip
                count += 1
            sent.append((tp, count, await self._send(producer, batch, tp)))
        return sent

    async def _send(
        self, producer: AIOKafkaProducer, batch: Any, tp: TopicPartition
    ) -> asyncio.Future[Any]:
        # A closed batch is drained at once; an open one waits out ``linger_ms`` in the
        # accumulator (it could still take records from send()), which every transaction
        # would then pay before its produce request even leaves.
        batch.close()
        future: asyncio.Future[Any] = await producer.send_batch(
            batch, tp.topic, partition=tp.partition
        )
        future.add_done_callback(_retrieve)
        # The batch's drain waiter gets the same error and nobody awaits it (see _retrieve).
        queued = producer._message_accumulator._batches.get(tp)
        if queued:
            queued[-1]._drain_waiter.add_done_callback(_retrieve)
        return future

    async def _partition_for(
        self, producer: AIOKafkaProducer, topic: str, key: bytes | None
    ) -> int:
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = sorted(await producer.partitions_for(topic))
            self._partitions[topic] = partitions
        return int(_PARTITIONER(key, partitions, partitions))

    async def _abort(self, *, fenced: bool = False) -> None:
        producer = self._producer
        if producer is None:
            return
        if fenced:
            # A fenced producer is in a fatal state: it can neither abort nor be reused
            # (aiokafka asserts on the transition). The new owner already aborted our work.
            await self.stop()
            return
        _retrieve(producer._txn_manager.wait_for_transaction_end())  # see _retrieve
        try:
            await asyncio.wait_for(producer.abort_transaction(), self._timeout_s)
        except _ABORT_FAULTS as exc:
            # AssertionError: aiokafka refuses an abort from a fatal state; drop the producer.
            log.warning(
                "transaction_abort_failed", transactional_id=self.transactional_id, error=repr(exc)
            )
            await self.stop()


def _fatal(producer: AIOKafkaProducer) -> bool:
    """Whether the producer's transactions ended in a fatal state (fenced by a newer owner)."""
    manager = getattr(producer, "_txn_manager", None)
    return manager is not None and bool(manager.is_fatal_error())


async def _close_quietly(producer: AIOKafkaProducer, timeout_s: float = 5.0) -> None:
    try:
        await asyncio.wait_for(producer.stop(), timeout_s)
    except KAFKA_FAULTS as exc:
        log.warning("producer_close_failed", error=repr(exc))


def tune_transaction_backoff(ms: int) -> None:
    """Set how long aiokafka waits before retrying a transaction's first request that the
    broker refused with CONCURRENT_TRANSACTIONS (the previous transaction's markers are
    still being written, a few milliseconds on a healthy broker). aiokafka has no option
    for it, only a module constant of 20 ms (KAFKA-5477), which back-to-back transactions
    on one partition otherwise pay every time; it applies to every producer in the process."""
    aiokafka_sender.BACKOFF_OVERRIDE = ms / 1000


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a failed send's error as seen: the transaction's outcome already reports it.
    Also for the transaction's own waiter, which aiokafka sets to an abortable error (a
    refused partition) and replaces, unread, when the abort begins: asyncio would log
    "Future exception was never retrieved" for each such abort."""
    if future.done() and not future.cancelled():
        future.exception()


def _mark_waiter_errors_seen(producer: AIOKafkaProducer) -> None:
    """aiokafka sets its transaction waiter's exception on every abortable or fatal error,
    and a fatal one replaces a waiter already done: a fenced zombie's requests in flight each
    meet the fence, and each replaced waiter, never awaited, was logged by asyncio as "Future
    exception was never retrieved" at ERROR with a traceback (found by the fault matrix's
    paused instances). The transaction's outcome reports the error; mark each as seen."""
    manager = getattr(producer, "_txn_manager", None)
    if manager is None:
        return
    for name in ("error_transaction", "fatal_error"):
        original = getattr(manager, name)

        def marked(exc: BaseException, _original: Any = original) -> None:
            _original(exc)
            _retrieve(manager.wait_for_transaction_end())

        setattr(manager, name, marked)


class Publisher:
    """A plain idempotent producer (no transactions) for the review API's decisions."""

    def __init__(self, settings: KafkaSettings, max_record_bytes: int = 1_000_000) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        # As large as the transactional producers': a decision carrying an edit of a
        # maximum-size record (the API refuses larger ones with 413 before publishing).
        self.max_request_size = max_record_bytes + _REQUEST_OVERHEAD_BYTES

    async def start(self) -> None:
        if self._producer is not None:
            return
        s = self._settings
        producer = AIOKafkaProducer(
            client_id=f"{s.client_id}-api",
            enable_idempotence=True,
            request_timeout_ms=s.request_timeout_ms,
            max_request_size=self.max_request_size,
            **s.producer_options(),
        )
        try:
            with kafka_errors("starting the decision publisher"):
                await producer.start()
        except (InfrastructureError, KafkaAccessError):
            await _close_quietly(producer)
            raise
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _close_quietly(producer)

    async def publish(
        self,
        topic: str,
        value: bytes,
        key: bytes,
        partition: int | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        if self._producer is None:
            raise KafkaUnavailable("the decision publisher is not started")
        with kafka_errors("publishing a decision"):
            await self._producer.send_and_wait(
                topic, value, key=key, partition=partition, headers=headers
            )
