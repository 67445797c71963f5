"""Partition ownership: which input partitions this instance owns, taking and giving them up.

The outputs and decisions topics have the same partition count and the range assignor gives
partition p of each to the same member, so "partition p" is one unit of ownership: its
transactional producer, its holds and audit partitions, its hold index and audit chain, and
its lane (``lane.Lane``). The consumer's rebalance listener reports assignments and
revocations here; taking a partition is slow (a producer's ``init_transactions``, rebuilding
the hold index from Kafka), so the run loop does it between fetches (``take_pending``).
Starting a taken partition's lane is injected (``start_lane``): the commit path owns what a
lane does, this table only when it exists.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog
from aiokafka import TopicPartition

from hitl_gateway.audit import AuditChain, ChainHead, Sealing
from hitl_gateway.errors import InfrastructureError, KafkaAccessError
from hitl_gateway.holds import HoldIndex
from hitl_gateway.lane import Lane
from hitl_gateway.metrics import GatewayMetrics
from hitl_gateway.recovery import Reader, audit_head, restore_holds
from hitl_gateway.settings import Settings
from hitl_gateway.sink import PartitionProducer
from hitl_gateway.source import Source
from hitl_gateway.stopswitch import SwitchEvent, state

log = structlog.get_logger(__name__)


class Ownership:
    def __init__(
        self,
        settings: Settings,
        metrics: GatewayMetrics,
        source: Source,
        reader: Reader,
        index: HoldIndex,
        *,
        start_lane: Callable[[Lane], asyncio.Task[None]],
        sealing: Sealing,
    ) -> None:
        self._settings = settings
        self._topics = settings.topics
        self._metrics = metrics
        self._source = source
        self._reader = reader
        self._index = index
        self._start_lane = start_lane
        self._sealing = sealing
        # Owned partitions' lanes; per input topic-partition, the next offset to process.
        self.lanes: dict[int, Lane] = {}
        self.next_offset: dict[TopicPartition, int] = {}
        self._assigned: dict[int, set[TopicPartition]] = {}
        # Assigned, but not yet taken (producer, index or chain not ready): retried.
        self.pending: set[int] = set()
        # Guards ownership: held by the rebalance callbacks (a revoke waits for the lanes'
        # in-flight batches) and while taking partitions. Never held across getmany, which
        # blocks while a reassignment is in progress (that is, until the callbacks have run).
        self._lock = asyncio.Lock()
        # The group join completed at least once (possibly with no partitions: a group can
        # have more instances than partitions).
        self.joined = False
        self._switch_scopes: set[str] = set()  # every scope the metric has shown

    def assigned(self, partition: int) -> set[TopicPartition]:
        """Partition p's topic-partitions in the consumer (outputs and decisions)."""
        return self._assigned.get(partition, set())

    def current(self, lane: Lane) -> bool:
        """Whether ``lane`` is still its partition's lane (not retired or dropped)."""
        return self.lanes.get(lane.partition) is lane

    # -- flow control ---------------------------------------------------------------------

    def pause(self, lane: Lane) -> None:
        if not lane.paused:
            self._source.pause(self.assigned(lane.partition))
            lane.paused = True

    def resume(self, lane: Lane) -> None:
        if lane.paused and self.current(lane):
            self._source.resume(self.assigned(lane.partition))
        lane.paused = False

    # -- the rebalance listener's callbacks ------------------------------------------------

    async def partitions_assigned(self, tps: set[TopicPartition]) -> None:
        # Kept short: a slow callback delays the group's heartbeat and gets this member
        # expired mid-rebalance. The run loop takes the partitions (see take_pending).
        async with self._lock:
            for tp in tps:
                self._assigned.setdefault(tp.partition, set()).add(tp)
            self.pending |= {tp.partition for tp in tps}
            self.joined = True
        log.info("partitions_assigned", partitions=_names(tps))

    async def partitions_revoked(self, tps: set[TopicPartition]) -> None:
        async with self._lock:
            numbers = {tp.partition for tp in tps}
            await self._release(numbers)  # waits for the lanes' in-flight batches
            for p in numbers:
                self._assigned.pop(p, None)
            self.pending -= numbers
        log.info("partitions_revoked", partitions=_names(tps))

    async def stop(self) -> None:
        async with self._lock:
            await self._release(set(self.lanes))

    # -- taking partitions -----------------------------------------------------------------

    async def take_pending(self) -> None:
        """Take the assigned partitions not yet owned.

        Outside the lock (slow reads): start the producer, whose ``init_transactions``
        completes or aborts what a previous owner left open; rebuild the hold index; find
        the audit chain head. Then, under the lock and only if still assigned: read the
        committed offsets and seek to them. aiokafka fetched committed offsets before the
        assign callback, possibly before the previous owner's transaction settled, so only
        offsets read now are current; records below them are never processed (the run
        loop's dispatch drops them). Called by the run loop between fetches, so no fetch
        overlaps the seeks.
        """
        async with self._lock:
            pending = sorted(self.pending)
        if not pending:
            return
        started = time.monotonic()
        prepared = await asyncio.gather(
            *(self._prepare(p) for p in pending), return_exceptions=True
        )
        failures: list[BaseException] = []
        async with self._lock:
            for p, result in zip(pending, prepared, strict=True):
                if isinstance(result, BaseException):
                    failures.append(result)
                    continue
                producer, head, switches = result
                if p not in self.pending:  # revoked meanwhile
                    await producer.stop()
                    continue
                try:
                    for tp in self.assigned(p):
                        offset = await self._source.committed(tp)
                        if offset is None:
                            self.next_offset.pop(tp, None)
                            await self._source.seek_to_beginning(tp)
                        else:
                            self.next_offset[tp] = offset
                            self._source.seek(tp, offset)
                except InfrastructureError as exc:
                    await producer.stop()
                    failures.append(exc)
                    continue
                self._source.resume(self.assigned(p))  # if paused when dropped
                lane = Lane(
                    p,
                    producer,
                    AuditChain(head, partition=p, sealing=self._sealing),
                    switches=switches,
                )
                lane.task = self._start_lane(lane)
                self.lanes[p] = lane
                self.pending.discard(p)
            self._metrics.assigned_partitions.set(len(self.lanes))
            self.show_switches()
        log.info(
            "partitions_taken",
            partitions=sorted(set(pending) - self.pending),
            took_s=round(time.monotonic() - started, 3),
        )
        refused = [f for f in failures if isinstance(f, KafkaAccessError)]
        if refused:
            raise refused[0]  # no retry cures it (a missing ACL): the gateway stops
        if failures:
            raise InfrastructureError(f"could not take {len(failures)} partition(s): {failures[0]}")

    async def _prepare(self, p: int) -> tuple[PartitionProducer, ChainHead, list[SwitchEvent]]:
        tp = TopicPartition(self._topics.outputs, p)
        producer = PartitionProducer(
            self._settings.kafka, tp, self._settings.limits.max_record_bytes
        )
        await producer.start()
        try:
            await restore_holds(self._reader, self._index, self._topics.holds, p)
            head = await audit_head(self._reader, self._topics.audit, p, self._scan_offsets())
            # After the index is restored: its stop switch events are complete up to the
            # partition's last stable offset (the lane keeps them for routing).
            switches = await self._index.switches(p)
        except BaseException:
            await producer.stop()
            raise
        return producer, head, switches

    def _scan_offsets(self) -> int | None:
        """How far back a keyed chain's last checkpoint is looked for (None: unkeyed, only
        the head). A checkpoint closes every transaction that brings the events waiting for
        one to ``checkpoint_every``; one transaction seals a few events per record at most,
        and each transaction adds a marker."""
        if self._sealing.key is None:
            return None
        batch = self._settings.kafka.max_batch_records
        return 4 * (self._sealing.checkpoint_every + 2 * batch) + 1_024

    # -- giving partitions up --------------------------------------------------------------

    async def _release(self, partitions: set[int]) -> None:
        """Give up partitions (revoke, stop): each lane's in-flight batch finishes first;
        what it had fetched and not processed is dropped (the next owner reads it again)."""
        await asyncio.gather(*(self._retire(p) for p in partitions))
        for p in partitions:
            for tp in self.assigned(p):
                self.next_offset.pop(tp, None)
        self._metrics.assigned_partitions.set(len(self.lanes))
        self.show_switches()

    async def _retire(self, p: int) -> None:
        lane = self.lanes.pop(p, None)  # nothing more is dispatched to it
        if lane is None:
            return
        lane.ready.set()  # a transaction waiting for more records commits what it has
        async with lane.lock:
            lane.clear()
            task = lane.task
            if task is not None:
                task.cancel()  # waiting for records, the lock or a backoff: never mid-batch
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        await lane.producer.stop()

    async def drop(self, lane: Lane) -> None:
        """From within the lane (its lock held): the producer or the index can no longer be
        trusted. The lane ends; the run loop takes the partition afresh if still assigned
        (a new producer, the index rebuilt, the committed offsets read again)."""
        if self.current(lane):
            del self.lanes[lane.partition]
            if lane.partition in self._assigned:
                self.pending.add(lane.partition)
        lane.clear()
        lane.ready.set()  # its task wakes up and sees it is no longer current
        await lane.producer.stop()
        self._metrics.assigned_partitions.set(len(self.lanes))
        self.show_switches()

    def show_switches(self) -> None:
        """``hitl_stop_switch{domain}``: 1 while a scope's switch is on in a partition this
        instance owns (0 once it is off, or its partitions are gone)."""
        on: set[str] = set()
        for lane in self.lanes.values():
            on |= {scope for scope, e in state(lane.switches).items() if e.on}
        self._switch_scopes |= on
        for scope in self._switch_scopes:
            self._metrics.stop_switch.labels(domain=scope).set(1 if scope in on else 0)


def _names(tps: set[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in tps)
