"""Fetch -> per-partition lanes -> route / apply decisions -> produce -> commit -> index.

The gateway consumes the outputs and decisions topics. Both have the same partition count
and the range assignor gives partition p of each to the same instance, so "partition p"
is one unit of ownership: its transactional producer, its holds and audit partitions, its
hold index and audit chain. The run loop fetches and hands each owned partition's records
to its lane (``lane.Lane``); the lane's task commits them, one transaction at a time, so
one partition routes while another waits for its commit round trips. Each transaction
holds a partition's records, outputs and offsets (of both topics); a failed one is
aborted and the partition rewound, so infrastructure failures never become committed
progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from hitl_gateway.audit import AuditChain
from hitl_gateway.errors import FencedError, InfrastructureError
from hitl_gateway.holds import HoldIndex, index_changes
from hitl_gateway.lane import Lane, Work
from hitl_gateway.metrics import GatewayMetrics
from hitl_gateway.policy.store import PolicyStore
from hitl_gateway.recovery import Reader, audit_head, restore_holds
from hitl_gateway.review.applier import Applied, DecisionApplier
from hitl_gateway.routing import Router, Tally
from hitl_gateway.settings import Settings
from hitl_gateway.sink import Outgoing, PartitionProducer
from hitl_gateway.source import Batch, Source

log = structlog.get_logger(__name__)


class _IndexError(InfrastructureError):
    """Redis failed while the index followed a commit (the commit itself stands)."""


class Backoff:
    """Bounded exponential backoff for retried infrastructure failures."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self._initial_s = initial_s
        self._max_s = max_s
        self._next_s = initial_s

    def next_delay(self) -> float:
        delay, self._next_s = self._next_s, min(self._next_s * 2, self._max_s)
        return delay

    def reset(self) -> None:
        self._next_s = self._initial_s


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        metrics: GatewayMetrics,
        policies: PolicyStore,
        router: Router,
        applier: DecisionApplier,
        index: HoldIndex,
    ) -> None:
        self._settings = settings
        self._topics = settings.topics
        self._metrics = metrics
        self._policies = policies
        self._router = router
        self._applier = applier
        self._index = index
        topics = [settings.topics.outputs, settings.topics.review_decisions]
        self._source = Source(settings.kafka, topics, owner=self)
        self._reader = Reader(settings.kafka)
        # Ownership of partition p: its lane (producer, audit chain, unprocessed records and
        # the task committing them); per input partition, the next offset to process.
        self._lanes: dict[int, Lane] = {}
        self._next_offset: dict[TopicPartition, int] = {}
        self._assigned: dict[int, set[TopicPartition]] = {}
        # Assigned, but not yet taken (producer, index or chain not ready): retried.
        self._pending: set[int] = set()
        # Guards ownership: held by the rebalance callbacks (a revoke waits for the lanes'
        # in-flight batches) and while taking partitions. Never held across getmany, which
        # blocks while a reassignment is in progress (that is, until the callbacks have run).
        self._lock = asyncio.Lock()
        # A lane's unexpected error (a bug, not infrastructure): the run loop re-raises it.
        self._fatal: BaseException | None = None
        self.committed_records = 0
        self.last_commit_monotonic = time.monotonic()
        # The group join completed at least once (possibly with no partitions: a group can
        # have more instances than partitions).
        self.joined = False

    @property
    def owned_partitions(self) -> set[int]:
        return set(self._lanes)

    async def broker_reachable(self) -> bool:
        return await self._source.ping(timeout_s=5.0)

    async def lag(self) -> list[tuple[TopicPartition, int, int]]:
        try:
            return await self._source.lag()
        except (KafkaError, InfrastructureError) as exc:
            raise InfrastructureError(f"lag unavailable: {exc!r}") from exc

    def partition_lock(self, partition: int) -> asyncio.Lock | None:
        """Partition p's write lock while it is owned: whoever holds it is the only writer of
        p's transactions and audit chain. Check ``partition_lock(p)`` again once acquired:
        a partition released and taken back meanwhile has a new lock."""
        lane = self._lanes.get(partition)
        return lane.lock if lane is not None else None

    def chain(self, partition: int) -> AuditChain:
        return self._lanes[partition].chain

    async def start(self) -> None:
        await self._reader.start()
        await self._source.start()

    async def stop(self) -> None:
        await self._source.stop()
        async with self._lock:
            await self._release(set(self._lanes))
        await self._reader.stop()

    # -- partition ownership (called by the consumer's rebalance listener) ----------------

    async def partitions_assigned(self, tps: set[TopicPartition]) -> None:
        # Kept short: a slow callback delays the group's heartbeat and gets this member
        # expired mid-rebalance. The run loop takes the partitions (see _take_pending).
        async with self._lock:
            for tp in tps:
                self._assigned.setdefault(tp.partition, set()).add(tp)
            self._pending |= {tp.partition for tp in tps}
            self.joined = True
        log.info("partitions_assigned", partitions=_names(tps))

    async def partitions_revoked(self, tps: set[TopicPartition]) -> None:
        async with self._lock:
            numbers = {tp.partition for tp in tps}
            await self._release(numbers)  # waits for the lanes' in-flight batches
            for p in numbers:
                self._assigned.pop(p, None)
            self._pending -= numbers
        log.info("partitions_revoked", partitions=_names(tps))

    async def _take_pending(self) -> None:
        """Take the assigned partitions not yet owned.

        Outside the lock (slow reads): start the producer, whose ``init_transactions``
        completes or aborts what a previous owner left open; rebuild the hold index; find
        the audit chain head. Then, under the lock and only if still assigned: read the
        committed offsets and seek to them. aiokafka fetched committed offsets before the
        assign callback, possibly before the previous owner's transaction settled, so only
        offsets read now are current; records below them are never processed (_dispatch).
        Called by the run loop between fetches, so no fetch overlaps the seeks.
        """
        async with self._lock:
            pending = sorted(self._pending)
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
                producer, head = result
                if p not in self._pending:  # revoked meanwhile
                    await producer.stop()
                    continue
                try:
                    for tp in self._assigned.get(p, ()):
                        offset = await self._source.committed(tp)
                        if offset is None:
                            self._next_offset.pop(tp, None)
                            await self._source.seek_to_beginning(tp)
                        else:
                            self._next_offset[tp] = offset
                            self._source.seek(tp, offset)
                except KafkaError as exc:
                    await producer.stop()
                    failures.append(exc)
                    continue
                self._source.resume(self._assigned.get(p, set()))  # if paused when dropped
                lane = Lane(p, producer, AuditChain(head))
                lane.task = asyncio.create_task(self._drive(lane), name=f"lane-{p}")
                self._lanes[p] = lane
                self._pending.discard(p)
            self._metrics.assigned_partitions.set(len(self._lanes))
        log.info(
            "partitions_taken",
            partitions=sorted(set(pending) - self._pending),
            took_s=round(time.monotonic() - started, 3),
        )
        if failures:
            raise InfrastructureError(f"could not take {len(failures)} partition(s): {failures[0]}")

    async def _prepare(self, p: int) -> tuple[PartitionProducer, str]:
        producer = self._new_producer(p)
        await producer.start()
        try:
            await restore_holds(self._reader, self._index, self._topics.holds, p)
            head = await audit_head(self._reader, self._topics.audit, p)
        except BaseException:
            await producer.stop()
            raise
        return producer, head

    def _new_producer(self, partition: int) -> PartitionProducer:
        tp = TopicPartition(self._topics.outputs, partition)
        return PartitionProducer(self._settings.kafka, tp, self._settings.limits.max_record_bytes)

    async def _release(self, partitions: set[int]) -> None:
        """Give up partitions (revoke, stop): each lane's in-flight batch finishes first;
        what it had fetched and not processed is dropped (the next owner reads it again)."""
        await asyncio.gather(*(self._retire(p) for p in partitions))
        for p in partitions:
            for tp in self._assigned.get(p, ()):
                self._next_offset.pop(tp, None)
        self._metrics.assigned_partitions.set(len(self._lanes))

    async def _retire(self, p: int) -> None:
        lane = self._lanes.pop(p, None)  # nothing more is dispatched to it
        if lane is None:
            return
        async with lane.lock:
            lane.clear()
            task = lane.task
            if task is not None:
                task.cancel()  # waiting for records, the lock or a backoff: never mid-batch
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        await lane.producer.stop()

    async def _drop(self, lane: Lane) -> None:
        """From within the lane (its lock held): the producer or the index can no longer be
        trusted. The lane ends; the run loop takes the partition afresh if still assigned
        (a new producer, the index rebuilt, the committed offsets read again)."""
        if self._lanes.get(lane.partition) is lane:
            del self._lanes[lane.partition]
            if lane.partition in self._assigned:
                self._pending.add(lane.partition)
        lane.clear()
        lane.ready.set()  # its task wakes up and sees it is no longer current
        await lane.producer.stop()
        self._metrics.assigned_partitions.set(len(self._lanes))

    # -- the run loop ----------------------------------------------------------------------

    async def run(
        self,
        stop: asyncio.Event,
        *,
        max_records: int | None = None,
        idle_timeout_s: float | None = None,
    ) -> None:
        """Fetch and dispatch until ``stop`` is set (or a test/load-test stop condition holds).
        The lanes commit; their unexpected errors surface here."""
        kafka = self._settings.kafka
        runtime = self._settings.runtime
        backoff = Backoff(runtime.retry_backoff_initial_s, runtime.retry_backoff_max_s)
        last_activity = time.monotonic()
        while not stop.is_set():
            if self._fatal is not None:
                raise self._fatal
            try:
                if self._pending:
                    await self._take_pending()
                batch = await self._fetch(kafka.poll_timeout_ms)
                if batch:
                    self._dispatch(batch)
                    last_activity = time.monotonic()
                backoff.reset()
            except InfrastructureError as exc:
                delay = backoff.next_delay()
                self._metrics.infrastructure_errors.labels(component="kafka").inc()
                log.warning("infrastructure_error_retrying", error=str(exc), retry_in_s=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            if max_records is not None and self.committed_records >= max_records:
                log.info("record_limit_reached", committed_records=self.committed_records)
                return
            idle_since = max(last_activity, self.last_commit_monotonic)
            if idle_timeout_s is not None and time.monotonic() - idle_since > idle_timeout_s:
                log.info("idle_timeout_reached", idle_timeout_s=idle_timeout_s)
                return

    async def _fetch(self, timeout_ms: int) -> Batch:
        """Everything the consumer has buffered. Records left in its buffer would hold back
        fetching for every other partition on that broker (aiokafka sends no fetch to a node
        while one of its partitions has recent unconsumed data), so a lane's backlog is
        bounded by pausing its partitions instead (``_dispatch``)."""
        try:
            return await self._source.fetch(timeout_ms)
        except KafkaError as exc:
            raise InfrastructureError(f"fetch failed: {exc!r}") from exc

    def _dispatch(self, batch: Batch) -> None:
        """Hand each owned partition's records to its lane; pause a lane's partitions while
        it has more than two batches waiting. Synchronous, and run in the same step as the
        fetch that drained them: a lane's rewind (a seek) can never fall between the two and
        let records from before it through."""
        high = 2 * self._settings.kafka.max_batch_records
        for tp, fetched in batch.items():
            lane = self._lanes.get(tp.partition)
            if lane is None:
                # Not (or no longer) owned: revoked, fenced or pending after this batch was
                # fetched. Taking ownership seeks it to the committed offset.
                continue
            # A batch fetched before ownership settled may start below the committed offset.
            floor = self._next_offset.get(tp, -1)
            records = fetched if fetched[0].offset >= floor else [
                r for r in fetched if r.offset >= floor
            ]  # fmt: skip
            lane.add(tp, records)
            if lane.count >= high and not lane.paused:
                self._source.pause(self._assigned.get(tp.partition, set()))
                lane.paused = True

    def _resume(self, lane: Lane) -> None:
        if lane.paused and self._lanes.get(lane.partition) is lane:
            self._source.resume(self._assigned.get(lane.partition, set()))
        lane.paused = False

    async def _drive(self, lane: Lane) -> None:
        """The lane's task: one transaction at a time from what the run loop handed over."""
        runtime = self._settings.runtime
        limit = self._settings.kafka.max_batch_records
        interval_s = self._settings.kafka.commit_interval_ms / 1000
        decisions = self._topics.review_decisions
        backoff = Backoff(runtime.retry_backoff_initial_s, runtime.retry_backoff_max_s)
        try:
            while True:
                await lane.ready.wait()
                if lane.count < limit and interval_s > 0 and not lane.holds(decisions):
                    # Fewer than a batch waiting: gather more, up to the commit interval
                    # after the oldest record was fetched (fewer, larger transactions).
                    # A reviewer's decision never waits: someone is watching for it.
                    wait_s = lane.oldest_monotonic + interval_s - time.monotonic()
                    if wait_s > 0:
                        await asyncio.sleep(wait_s)
                delay: float | None = None
                async with lane.lock:
                    if self._lanes.get(lane.partition) is not lane:
                        return
                    fetched_at = lane.oldest_monotonic
                    work = lane.take(limit)
                    if lane.count < limit:
                        self._resume(lane)
                    if not work:
                        continue
                    try:
                        await self._commit_partition(lane, work, fetched_at)
                        backoff.reset()
                    except InfrastructureError as exc:
                        delay = backoff.next_delay()
                        if not isinstance(exc, _IndexError):  # counted where Redis failed
                            self._metrics.infrastructure_errors.labels(component="kafka").inc()
                        log.warning(
                            "infrastructure_error_retrying",
                            partition=lane.partition,
                            error=str(exc),
                            retry_in_s=delay,
                        )
                if delay is not None:
                    await asyncio.sleep(delay)  # unlocked: a revoke or the sweeper may go first
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug: stop the gateway rather than skip records
            log.exception("lane_failed", partition=lane.partition)
            self._fatal = exc

    async def _commit_partition(self, lane: Lane, work: Work, fetched_at: float) -> None:
        p = lane.partition
        producer = lane.producer
        chain = lane.chain
        by_topic = {tp.topic: records for tp, records in work.items()}
        inputs = by_topic.get(self._topics.outputs, [])
        decisions = by_topic.get(self._topics.review_decisions, [])
        offsets = {tp: records[-1].offset + 1 for tp, records in work.items()}
        try:
            # Routing and applying read Redis (budgets, id claims, holds): a failure there
            # rewinds the batch like a failed transaction, or its records would be skipped.
            # One policy set per partition batch: a reload never splits a batch.
            outgoing, tally = (
                await self._router.route(inputs, self._policies.current, chain)
                if inputs
                else ([], Tally())
            )
            applied = await self._applier.apply(decisions, p, chain) if decisions else Applied()
            outgoing += applied.outgoing
            metadata = await producer.commit(outgoing, offsets, self._settings.kafka.group_id)
            if not self._settings.kafka.exactly_once:
                await self._source.commit(offsets)  # after every output is acknowledged
        except FencedError:
            chain.rollback()
            # Another instance took our transactional id. Either we are a zombie (the group
            # will revoke p shortly) or it was one: re-take p either way; transactions keep
            # the outcome exact, and the backoff keeps the exchange short.
            log.error("partition_fenced", partition=p)
            await self._drop(lane)
            raise
        except InfrastructureError:
            chain.rollback()
            self._metrics.transactions.labels(outcome="abort").inc()
            for tp, offset in lane.rewind_positions(work).items():
                self._source.seek(tp, offset)
            self._resume(lane)
            if not producer.started:  # dropped after a failed abort: take it afresh
                await self._drop(lane)
            raise
        chain.commit()
        self._next_offset.update(offsets)
        self._metrics.batch_seconds.observe(time.monotonic() - fetched_at)
        self._account(tally, applied, len(inputs), len(decisions))
        await self._update_index(lane, outgoing, metadata, applied)

    async def publish(self, p: int, outgoing: list[Outgoing]) -> None:
        """A transaction on partition p's producer that consumes nothing (SLA escalations).
        The caller holds ``partition_lock(p)`` and has sealed audit events on ``chain(p)``."""
        lane = self._lanes[p]
        try:
            metadata = await lane.producer.commit(outgoing, {}, self._settings.kafka.group_id)
        except InfrastructureError:
            lane.chain.rollback()
            raise
        lane.chain.commit()
        await self._update_index(lane, outgoing, metadata, Applied())

    async def _update_index(
        self,
        lane: Lane,
        outgoing: list[Outgoing],
        written_to: dict[TopicPartition, int],
        applied: Applied,
    ) -> None:
        """After the commit: the index follows what Kafka now holds. If Redis fails here the
        partition is retaken (rebuilding the index) before any further decision is applied."""
        p = lane.partition
        written = [o for o in outgoing if o.topic == self._topics.holds]
        upserts, removals = index_changes(((o.key, o.value, o.headers) for o in written), p)
        last = written_to.get(TopicPartition(self._topics.holds, p), -1)
        applied_offsets = {(self._topics.holds, p): last + 1} if last >= 0 else {}
        if not (upserts or removals or applied.results):
            return
        try:
            await self._index.apply(upserts, removals, applied.results, applied_offsets)
        except InfrastructureError as exc:
            self._metrics.infrastructure_errors.labels(component="redis").inc()
            await self._drop(lane)
            raise _IndexError(str(exc)) from exc

    def _account(self, tally: Tally, applied: Applied, inputs: int, decisions: int) -> None:
        m = self._metrics
        m.transactions.labels(outcome="commit").inc()
        m.records_consumed.inc(inputs)
        m.records_delivered.inc(tally.delivered)
        now_ms = time.time() * 1000
        for at_ms in tally.delivered_at_ms:
            m.end_to_end_seconds.observe(max(0.0, (now_ms - at_ms) / 1000))
        for pool, n in tally.review_tasks.items():
            m.review_tasks.labels(pool=pool).inc(n)
        m.batch_records.observe(inputs + decisions)
        for (domain, route), n in tally.routes.items():
            m.records_routed.labels(domain=domain, route=route).inc(n)
        for reason, n in tally.dead_letters.items():
            m.records_dead_lettered.labels(reason=reason).inc(n)
        for pool, verdict, status in applied.verdicts:
            m.decisions.labels(pool=pool, verdict=verdict, status=status).inc()
        for pool, verdict, seconds in applied.latencies_s:
            m.review_latency.labels(pool=pool, verdict=verdict).observe(seconds)
        for refusal in applied.refusals:
            m.decisions_refused.labels(reason=refusal).inc()
        for kind in applied.calibration_events:
            m.calibration_events.labels(type=kind).inc()
        self.committed_records += inputs
        self.last_commit_monotonic = time.monotonic()


def _names(tps: set[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in tps)
