"""Stage 3: Kafka producer wrapper. One transactional producer per owned input partition
(or, with ``exactly_once`` off, one idempotent producer whose offsets the group commits).

aiokafka's ``send_offsets_to_transaction`` commits without the consumer group generation
(no KIP-447), so a zombie that lost its partition is fenced only through its transactional
id. Deriving that id from (group, topic, partition) makes the new owner's
``init_transactions`` fence the old owner and abort whatever it left open.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
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
        self.timeout_s = settings.request_timeout_ms / 1000
        self.exactly_once = settings.exactly_once
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
                await asyncio.wait_for(producer.start(), self.timeout_s)
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
            await _close_quietly(producer, self.timeout_s)

    async def commit(
        self, records: Sequence[Outgoing], offsets: dict[TopicPartition, int], group_id: str
    ) -> dict[TopicPartition, int]:
        """Produce ``records`` and commit ``offsets`` atomically, or raise with nothing committed.
        Returns the last offset written in each topic-partition."""
        async with self.transaction() as txn:
            await txn.send(records)
            return await txn.commit(offsets, group_id)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A transaction open for the body, which sends into it as its records are routed
        and ends it with ``Transaction.commit``. Anything the body raises (a Redis failure
        while routing a later chunk, a refused send) aborts it: nothing it sent is ever
        read by ``read_committed`` consumers, and the caller rewinds to its first record.
        If even the abort fails the producer is dropped and the next ``start()`` makes a new
        one (a stuck producer never recovers by itself).

        At-least-once (``exactly_once`` off), the records are kept until the commit and
        produced then, so a body that fails part way has produced nothing either."""
        producer = self._producer
        if producer is None:
            raise KafkaUnavailable(f"producer for {self.tp} is not started")
        txn = Transaction(self, producer)
        if not self.exactly_once:
            yield txn
            txn.ended()
            return
        with self.faults("beginning a transaction"):
            try:
                await asyncio.wait_for(producer.begin_transaction(), self.timeout_s)
            except TimeoutError:
                # aiokafka waits for a producer id without end: a producer that cannot get
                # one never recovers by itself (aio-libs/aiokafka#1017), so it is dropped
                # and the next start() makes a new one.
                await self.stop()
                raise
        try:
            yield txn
            txn.ended()
        except BaseException as exc:
            fatal = _fatal(producer)
            await self._abort(fenced=isinstance(exc, FencedError) or fatal)
            if fatal and any(isinstance(e, IllegalOperation) for e in (exc, exc.__cause__)):
                # Fenced while this transaction's batches were being sent: the next
                # send finds the transaction gone ("not in transaction"), not the fence.
                raise FencedError(f"{self.transactional_id} was fenced mid-send") from exc
            raise

    @contextlib.contextmanager
    def faults(self, doing: str) -> Iterator[None]:
        """Kafka's errors where Kafka is called: a fence becomes ``FencedError``, a refused
        ACL ``KafkaAccessError``, the rest ``KafkaUnavailable`` (retried). Errors from the
        caller's own work between the calls (Redis while routing) pass through unchanged."""
        with kafka_errors(f"{doing} on {self.tp}"):
            try:
                yield
            except _FENCED as exc:
                raise FencedError(f"{self.transactional_id} was fenced by a newer owner") from exc

    async def acknowledged(
        self, sent: Sequence[tuple[TopicPartition, int, asyncio.Future[Any]]]
    ) -> dict[TopicPartition, int]:
        """Wait for every batch's acknowledgement: the last offset written in each
        topic-partition (batches in the order sent, so the last one of each wins)."""
        acks = await asyncio.wait_for(
            asyncio.gather(*(future for _, _, future in sent)), self.timeout_s
        )
        return {tp: ack.offset + count - 1 for (tp, count, _), ack in zip(sent, acks, strict=True)}

    async def produce(
        self,
        producer: AIOKafkaProducer,
        records: Sequence[Outgoing],
    ) -> dict[TopicPartition, int]:
        """Produce ``records`` and wait for every acknowledgement: the last offset written in
        each topic-partition."""
        return await self.acknowledged(await self.send_batches(producer, records))

    async def send_batches(
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
            await asyncio.wait_for(producer.abort_transaction(), self.timeout_s)
        except _ABORT_FAULTS as exc:
            # AssertionError: aiokafka refuses an abort from a fatal state; drop the producer.
            log.warning(
                "transaction_abort_failed", transactional_id=self.transactional_id, error=repr(exc)
            )
            await self.stop()


class Transaction:
    """One open transaction of a partition's producer (``PartitionProducer.transaction``):
    records are sent as they are routed, their acknowledgements awaited only at the commit,
    where the input offsets join once every record is acknowledged."""

    def __init__(self, owner: PartitionProducer, producer: AIOKafkaProducer) -> None:
        self._owner = owner
        self._producer = producer
        self._exactly_once = owner.exactly_once
        self._sent: list[tuple[TopicPartition, int, asyncio.Future[Any]]] = []
        self._kept: list[Outgoing] = []  # at-least-once: produced at the commit
        self.committed = False

    def ended(self) -> None:
        """The body returned: it must have committed (a bug otherwise, which aborts)."""
        if not self.committed:
            raise RuntimeError(f"the transaction on {self._owner.tp} ended without a commit")

    async def send(self, records: Sequence[Outgoing]) -> None:
        if not records:
            return
        if not self._exactly_once:
            self._kept.extend(records)
            return
        with self._owner.faults("producing"):
            error = _abortable_error(self._producer)
            if error is not None:
                # An earlier chunk's batch was refused (an ACL, a fence): the transaction
                # can only abort, and aiokafka would report it as "not in transaction".
                raise error
            self._sent += await self._owner.send_batches(self._producer, records)

    async def commit(
        self, offsets: dict[TopicPartition, int], group_id: str
    ) -> dict[TopicPartition, int]:
        """Wait for every record's acknowledgement, add ``offsets`` (none for a transaction
        that consumes nothing), commit: the last offset written in each topic-partition.
        At-least-once, the kept records are produced and acknowledged; the caller commits
        the offsets through the group."""
        owner, producer = self._owner, self._producer
        if not self._exactly_once:
            with owner.faults("producing"):
                written = await owner.produce(producer, self._kept)
            self.committed = True
            return written
        timeout_s = owner.timeout_s
        with owner.faults("committing a transaction"):
            written = await owner.acknowledged(self._sent)
            # The offsets join the transaction once its records are acknowledged, not
            # while they are in flight: Kafka 3.6+ verifies a transaction's first write
            # to each partition with the coordinator, and one that meets the coordinator
            # still persisting AddOffsetsToTxn is refused as NOT_ENOUGH_REPLICAS and
            # retried after the client's backoff (measured at 2,000 records/s: 782
            # retries in 45 s and a p99 of 173 ms, against none and 89 ms in turn,
            # drain throughput the same; docs/deploy.md).
            if offsets:
                await asyncio.wait_for(
                    producer.send_offsets_to_transaction(offsets, group_id), timeout_s
                )
            await asyncio.wait_for(producer.commit_transaction(), timeout_s)
        self.committed = True
        return written


def _abortable_error(producer: AIOKafkaProducer) -> BaseException | None:
    """The error that ended the open transaction's chances (set by aiokafka when a batch or
    a partition's addition was refused), or None while it can still commit."""
    manager = getattr(producer, "_txn_manager", None)
    waiter = manager.wait_for_transaction_end() if manager is not None else None
    if waiter is None or not waiter.done() or waiter.cancelled():
        return None
    error: BaseException | None = waiter.exception()
    return error


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
