"""Taking over a partition: rebuild its hold index and find its audit chain head, from Kafka.

The index is rebuilt from the compacted holds partition when it is behind (a crash between
a commit and the index update) or empty (Redis lost its data): records from the index's
applied offset (or the start) to the last stable offset are applied in order, stop switch
events among them. The audit chain head is the hash (and, keyed, the next sequence number)
after the partition's last committed audit event; a keyed chain's next checkpoint range
starts after its last checkpoint, read back from the end.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from hitl_gateway.audit import ChainHead, restore
from hitl_gateway.errors import (
    InfrastructureError,
    KafkaAccessError,
    KafkaUnavailable,
    kafka_errors,
)
from hitl_gateway.holds import HoldIndex
from hitl_gateway.index_entries import index_changes, switch_changes
from hitl_gateway.settings import KafkaSettings

log = structlog.get_logger(__name__)
_BATCH = 5_000


class Reader:
    """A consumer with no group, for reading one partition from a position to its end."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        if self._consumer is not None:
            return
        s = self._settings
        consumer = AIOKafkaConsumer(
            client_id=f"{s.client_id}-reader",
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            # Reads end at the last stable offset, often just past transaction markers: do
            # not let the broker hold each fetch for the default 500 ms.
            fetch_max_wait_ms=20,
            **s.consumer_options(),
        )
        try:
            with kafka_errors("starting the reader"):
                await consumer.start()
        except (InfrastructureError, KafkaAccessError):
            await consumer.stop()
            raise
        self._consumer = consumer

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def read(
        self, tp: TopicPartition, start: int | None, timeout_s: float = 60.0
    ) -> tuple[list[Any], int]:
        """Committed records of ``tp`` from ``start`` (None: the beginning) to its last stable
        offset, and that offset, within ``timeout_s``.

        The deadline covers every call: aiokafka's ``position`` waits for a position in a
        loop without end while its offset reset keeps failing (a connection reset in the
        middle of one), and a read stuck there holds the lock every partition take needs. A
        read that times out drops the consumer; the next read starts a new one."""
        async with self._lock:
            if self._consumer is None:
                await self.start()
            assert self._consumer is not None
            try:
                async with asyncio.timeout(timeout_s):
                    return await self._read(self._consumer, tp, start)
            except TimeoutError:
                consumer, self._consumer = self._consumer, None
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(consumer.stop(), 5)
                raise KafkaUnavailable(
                    f"reading {tp} timed out after {timeout_s:g} s; the reader is made anew"
                ) from None

    async def _end(self, tp: TopicPartition) -> int:
        if self._consumer is None:  # a read timed out and dropped it
            await self.start()
        assert self._consumer is not None
        with kafka_errors(f"reading {tp}"):
            return int((await self._consumer.end_offsets([tp]))[tp])

    @staticmethod
    async def _read(
        consumer: AIOKafkaConsumer, tp: TopicPartition, start: int | None
    ) -> tuple[list[Any], int]:
        with kafka_errors(f"reading {tp}"):
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            if end == 0 or (start is not None and start >= end):
                return [], end  # nothing to read: skip the position reset round trips
            if start is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, start)
            out: list[Any] = []
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=200, max_records=_BATCH)
                out.extend(r for r in batch.get(tp, ()) if r.offset < end)
            return out, end

    async def window(self, tp: TopicPartition, size: int) -> tuple[int, int]:
        """The offsets of ``tp``'s last ``size`` positions: (start, end)."""
        async with self._lock:
            end = await self._end(tp)
        return max(0, end - size), end

    async def tail(self, tp: TopicPartition) -> list[Any]:
        """The last committed records of ``tp`` (stepping back past control records)."""
        async with self._lock:
            end = await self._end(tp)
        step = 16
        while True:
            start = max(0, end - step)
            records, _ = await self.read(tp, start)
            if records or start == 0:
                return records
            step *= 8


async def restore_holds(reader: Reader, index: HoldIndex, holds_topic: str, partition: int) -> int:
    """Bring one holds partition's index up to its last stable offset; returns records read."""
    tp = TopicPartition(holds_topic, partition)
    applied = await index.applied_offset(holds_topic, partition)
    records, end = await reader.read(tp, applied)
    if applied is not None and not records and applied >= end:
        return 0
    rows = [(r.key, r.value, list(r.headers or ())) for r in records]
    upserts, removals = index_changes(rows, partition)
    switches = [(partition, e) for e in switch_changes(rows)]  # stop switch events, kept too
    await index.apply(upserts, removals, {}, {(holds_topic, partition): end}, switches)
    log.info(
        "hold_index_restored",
        partition=partition,
        from_offset=applied,
        to_offset=end,
        records=len(records),
    )
    return len(records)


async def audit_head(
    reader: Reader, audit_topic: str, partition: int, scan_offsets: int | None
) -> ChainHead:
    """Where the partition's chain stands. ``scan_offsets``: how far back from the end the
    last checkpoint is looked for (None: an unkeyed chain, only its head is needed)."""
    tp = TopicPartition(audit_topic, partition)
    if scan_offsets is None:
        records = await reader.tail(tp)
        head = restore([(r.value, r.timestamp) for r in records], complete=False)[0]
        if head.seq:  # its last event is keyed: what this instance seals, verify reports
            log.warning("audit_chain_keyed_but_no_key", partition=partition)
        return head
    step = 16
    while True:
        start, end = await reader.window(tp, step)
        records, _ = await reader.read(tp, start)
        head, known = restore([(r.value, r.timestamp) for r in records], complete=start == 0)
        if known or (step >= scan_offsets and records):
            break
        # Past the bound only while nothing at all was found (as ``tail``).
        step = min(step * 8, scan_offsets) if records else step * 8
    if not known:
        log.warning("audit_checkpoint_not_found", partition=partition, scanned=end - start,
                    next_seq=head.seq)  # fmt: skip
    return head
