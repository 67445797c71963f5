"""One owned partition's lane: the records fetched for it and not yet processed.

The run loop fetches and hands each partition's records to its lane; the lane's own task
turns them into transactions, one at a time. Lanes of different partitions overlap: one
routes while another waits for its commit. Within a lane, order is the fetch order and a
transaction covers a prefix of what was fetched, so a failed one rewinds the consumer to
its first record (``rewind_positions``) and everything after it is fetched again.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from hitl_gateway.audit import AuditChain
from hitl_gateway.sink import PartitionProducer
from hitl_gateway.stopswitch import SwitchEvent

Work = dict[TopicPartition, list[Any]]  # aiokafka ConsumerRecord is untyped


@dataclass(eq=False)
class Lane:
    partition: int
    producer: PartitionProducer
    chain: AuditChain
    # Held by the lane's task for one transaction, and by whoever else writes to the
    # partition (SLA escalations) or takes it away (a revoke waits for the in-flight batch).
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    count: int = 0
    paused: bool = False  # its partitions are paused in the consumer (too much waiting)
    clock: Callable[[], float] = time.monotonic
    # The partition's stop switch events (stopswitch.py): loaded when it is taken, extended
    # when a command commits, so routing reads no Redis for them.
    switches: list[SwitchEvent] = field(default_factory=list)
    _buffer: Work = field(default_factory=dict)
    # Per topic-partition, its buffered records as fetched: [fetch time, how many are left].
    _fetches: dict[TopicPartition, deque[list[Any]]] = field(default_factory=dict)

    def add(self, tp: TopicPartition, records: list[Any]) -> None:
        if not records:
            return
        self._buffer.setdefault(tp, []).extend(records)
        self._fetches.setdefault(tp, deque()).append([self.clock(), len(records)])
        self.count += len(records)
        self.ready.set()

    def holds(self, topic: str) -> bool:
        """Whether records of ``topic`` are waiting."""
        return any(tp.topic == topic for tp in self._buffer)

    def take(self, limit: int) -> Work:
        """The next transaction's records: up to ``limit`` per topic-partition, in order."""
        work: Work = {}
        for tp, records in list(self._buffer.items()):
            work[tp], rest = records[:limit], records[limit:]
            if rest:
                self._buffer[tp] = rest
                self._forget(tp, len(work[tp]))
            else:
                del self._buffer[tp]
                del self._fetches[tp]
        self.count = sum(len(r) for r in self._buffer.values())
        if not self.count:
            self.ready.clear()
        return work

    @property
    def oldest_monotonic(self) -> float:
        """When the oldest buffered record was fetched (0 with none): what a partial take
        leaves keeps its own fetch time, so it does not wait a whole commit interval again."""
        return min((fetches[0][0] for fetches in self._fetches.values()), default=0.0)

    def _forget(self, tp: TopicPartition, taken: int) -> None:
        fetches = self._fetches[tp]
        while taken:
            first = fetches[0]
            if first[1] > taken:
                first[1] -= taken
                return
            taken -= first[1]
            fetches.popleft()

    def rewind_positions(self, failed: Work) -> dict[TopicPartition, int]:
        """Where to seek so nothing after the last commit is skipped: the failed batch's
        first offsets, or the first buffered one for a topic-partition it did not cover.
        Clears the buffer (its records are fetched again from there)."""
        positions = {tp: records[0].offset for tp, records in failed.items() if records}
        for tp, records in self._buffer.items():
            positions.setdefault(tp, records[0].offset)
        self.clear()
        return positions

    def clear(self) -> None:
        self._buffer.clear()
        self._fetches.clear()
        self.count = 0
        self.ready.clear()
