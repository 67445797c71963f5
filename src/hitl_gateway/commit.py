"""The commit path: one owned partition's records, one transaction at a time.

Each lane's task (``Committer.drive``) takes what the run loop handed to its lane, routes the
input records and applies the decisions (both read Redis), produces the outputs and commits
them with the input offsets of both topics in the partition's transaction, then updates the
hold index and the metrics. Whatever fails before the commit (Redis while routing, Kafka
while producing) rewinds the consumer to the batch's first records and rolls the audit chain
back, so infrastructure failures never become committed progress; the lane retries after a
backoff. An unexpected error is a bug: it stops the gateway rather than skip records.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import structlog
from aiokafka import TopicPartition

from hitl_gateway.audit import AuditChain
from hitl_gateway.errors import (
    FencedError,
    InfrastructureError,
    KafkaAccessError,
    RedisUnavailable,
)
from hitl_gateway.holds import HoldIndex
from hitl_gateway.index_entries import index_changes
from hitl_gateway.lane import Lane, Work
from hitl_gateway.metrics import GatewayMetrics
from hitl_gateway.outputs import checkpoint_record
from hitl_gateway.ownership import Ownership
from hitl_gateway.policy.loader import PolicySet
from hitl_gateway.policy.store import PolicyStore
from hitl_gateway.review.applier import DecisionApplier
from hitl_gateway.review.batch import Applied
from hitl_gateway.routing import Router, Tally
from hitl_gateway.settings import Settings
from hitl_gateway.sink import Outgoing, Transaction
from hitl_gateway.source import Source
from hitl_gateway.stopswitch import merged

log = structlog.get_logger(__name__)


class IndexFollowError(RedisUnavailable):
    """Redis failed while the index followed a commit (the commit itself stands)."""


class IndexLostError(RedisUnavailable):
    """The partition's index is gone (Redis wiped, or a replica without it promoted): a
    decision would find no hold and be refused as unknown. The partition is retaken, which
    rebuilds the index from the holds topic, before anything is routed or applied."""


@dataclass(slots=True)
class Taken:
    """What one open transaction has taken and routed so far."""

    fetched_at: float  # when its first record was fetched
    work: Work = field(default_factory=dict)  # its input records, per topic-partition
    records: int = 0  # in ``work``
    inputs: int = 0
    decisions: int = 0
    outgoing: list[Outgoing] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)
    applied: Applied = field(default_factory=Applied)  # a chunk with decisions ends it

    def extend(self, chunk: Work) -> None:
        for tp, records in chunk.items():
            self.work.setdefault(tp, []).extend(records)
            self.records += len(records)


def _offsets(work: Work) -> dict[TopicPartition, int]:
    """The next offset to consume after ``work``, per topic-partition."""
    return {tp: records[-1].offset + 1 for tp, records in work.items() if records}


class Backoff:
    """Bounded exponential backoff for retried infrastructure failures. With ``jitter``,
    each delay is shortened by a random share of up to ``jitter`` of itself, so lanes and
    instances that failed together do not retry in lockstep."""

    def __init__(self, initial_s: float, max_s: float, jitter: float = 0.0) -> None:
        self._initial_s = initial_s
        self._max_s = max_s
        self._jitter = jitter
        self._next_s = initial_s

    def next_delay(self) -> float:
        delay, self._next_s = self._next_s, min(self._next_s * 2, self._max_s)
        return delay * (1 - self._jitter * random.random())  # noqa: S311 - not cryptographic

    def reset(self) -> None:
        self._next_s = self._initial_s


class Committer:
    def __init__(
        self,
        settings: Settings,
        metrics: GatewayMetrics,
        *,
        policies: PolicyStore,
        router: Router,
        applier: DecisionApplier,
        index: HoldIndex,
        source: Source,
        ownership: Ownership,
    ) -> None:
        self._settings = settings
        self._topics = settings.topics
        self._metrics = metrics
        self._policies = policies
        self._router = router
        self._applier = applier
        self._index = index
        self._source = source
        self._owner = ownership
        # A lane's unexpected error (a bug, not infrastructure): the run loop re-raises it.
        self.fatal: BaseException | None = None
        self.committed_records = 0
        self.last_commit_monotonic = time.monotonic()

    async def drive(self, lane: Lane) -> None:
        """The lane's task: one transaction at a time from what the run loop hands over."""
        runtime = self._settings.runtime
        backoff = Backoff(runtime.retry_backoff_initial_s, runtime.retry_backoff_max_s, 0.2)
        try:
            while True:
                await lane.ready.wait()
                delay: float | None = None
                async with lane.lock:
                    if not self._owner.current(lane):
                        return
                    if not lane.count:
                        lane.ready.clear()
                        continue
                    try:
                        await self._transaction(lane)
                        backoff.reset()
                    except InfrastructureError as exc:
                        delay = backoff.next_delay()
                        if not isinstance(exc, IndexFollowError):  # counted where Redis failed
                            errors = self._metrics.infrastructure_errors
                            errors.labels(component=exc.component).inc()
                        log.warning(
                            "infrastructure_error_retrying",
                            partition=lane.partition,
                            error=str(exc),
                            retry_in_s=round(delay, 3),
                        )
                if delay is not None:
                    await asyncio.sleep(delay)  # unlocked: a revoke or the sweeper may go first
        except asyncio.CancelledError:
            raise
        except KafkaAccessError as exc:  # a missing ACL: stop the gateway, naming it
            log.error("lane_refused", partition=lane.partition, error=str(exc))
            self.fatal = exc
        except BaseException as exc:  # a bug: stop the gateway rather than skip records
            log.exception("lane_failed", partition=lane.partition)
            self.fatal = exc

    async def _transaction(self, lane: Lane) -> None:
        """One transaction, open while its records arrive: each chunk the run loop handed
        over (what one fetch brought) is routed and sent into it at once, so that at the
        commit only the last acknowledgements, the offsets and the commit itself are left.
        It commits when a batch is full, when a chunk carried review decisions (someone is
        watching for them), or when the commit interval after its first record's fetch
        ends. Any failure aborts it and rewinds the consumer to its first record."""
        p = lane.partition
        chain = lane.chain
        taken = Taken(fetched_at=lane.oldest_monotonic)
        try:
            # One policy set per transaction: a reload never splits one.
            policies = self._policies.current
            async with lane.producer.transaction() as txn:
                await self._fill(lane, txn, taken, policies)
                checkpoint = self._checkpoint(chain)
                await txn.send(checkpoint)
                taken.outgoing += checkpoint
                offsets = _offsets(taken.work)
                written = await txn.commit(offsets, self._settings.kafka.group_id)
            if not self._settings.kafka.exactly_once:
                await self._source.commit(offsets)  # after every output is acknowledged
        except FencedError:
            chain.rollback()
            # Another instance took our transactional id. Either we are a zombie (the group
            # will revoke p shortly) or it was one: re-take p either way; transactions keep
            # the outcome exact, and the backoff keeps the exchange short.
            log.error("partition_fenced", partition=p)
            await self._owner.drop(lane)
            raise
        except InfrastructureError as exc:
            chain.rollback()
            self._metrics.transactions.labels(outcome="abort").inc()
            for tp, offset in lane.rewind_positions(taken.work).items():
                self._source.seek(tp, offset)
            self._owner.resume(lane)
            # Dropped after a failed abort, or an index to rebuild: take it afresh.
            if not lane.producer.started or isinstance(exc, IndexLostError):
                await self._owner.drop(lane)
            raise
        chain.commit()
        self._owner.next_offset.update(offsets)
        applied = taken.applied
        if applied.switches:
            lane.switches = merged(lane.switches, applied.switches)
            self._owner.show_switches()
        self._metrics.batch_seconds.observe(time.monotonic() - taken.fetched_at)
        self._account(taken.tally, applied, taken.inputs, taken.decisions)
        await self._update_index(lane, taken.outgoing, written, applied)

    async def _fill(self, lane: Lane, txn: Transaction, taken: Taken, policies: PolicySet) -> None:
        """Route chunks into ``txn`` until the transaction should commit."""
        limit = self._settings.kafka.max_batch_records
        deadline = taken.fetched_at + self._settings.kafka.commit_interval_ms / 1000
        while True:
            chunk = lane.take(limit - taken.records)
            taken.extend(chunk)  # from here a failure rewinds it too
            if lane.count < limit:
                self._owner.resume(lane)
            await txn.send(await self._route_chunk(lane, chunk, taken, policies))
            if taken.decisions or taken.records >= limit:
                return
            if not await self._more_before(lane, deadline):
                return

    async def _route_chunk(
        self, lane: Lane, chunk: Work, taken: Taken, policies: PolicySet
    ) -> list[Outgoing]:
        """Route a chunk's inputs and apply its decisions (both read Redis): its outputs,
        kept in ``taken`` for the index and the metrics after the commit."""
        p = lane.partition
        # Checked for every chunk: Redis may be wiped while the transaction is open, and a
        # decision would then find no hold (refused as unknown) or an id no claim.
        if not await self._index.intact(self._topics.holds, p):
            raise IndexLostError(f"the hold index of partition {p} is gone from Redis")
        by_topic = {tp.topic: records for tp, records in chunk.items()}
        inputs = by_topic.get(self._topics.outputs, [])
        decisions = by_topic.get(self._topics.review_decisions, [])
        outgoing: list[Outgoing] = []
        if inputs:
            routed, tally = await self._router.route(inputs, policies, lane.chain, lane.switches)
            outgoing += routed
            taken.tally.add(tally)
        if decisions:
            applied = await self._applier.apply(
                decisions, p, lane.chain, switches=lane.switches,
                switch_offset=self._switch_offset(p, _offsets(taken.work)),
            )  # fmt: skip
            outgoing += applied.outgoing
            taken.applied = applied
        taken.inputs += len(inputs)
        taken.decisions += len(decisions)
        taken.outgoing += outgoing
        return outgoing

    async def _more_before(self, lane: Lane, deadline: float) -> bool:
        """Whether more records arrive for the open transaction before ``deadline`` (False
        at once once the lane is retired: a revoke wakes it and waits for its commit)."""
        while self._owner.current(lane):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if lane.count:
                return True
            try:
                await asyncio.wait_for(lane.ready.wait(), remaining)
            except TimeoutError:
                return False
        return False

    def _switch_offset(self, p: int, offsets: dict[TopicPartition, int]) -> int:
        """Where a stop switch applied in this batch takes effect: the next input offset to
        route, that is the input offset this transaction commits (records routed before it,
        in this batch too, were decided without the switch), or the partition's committed
        one when the batch has no inputs (0 before its first commit)."""
        tp = TopicPartition(self._topics.outputs, p)
        return offsets.get(tp, self._owner.next_offset.get(tp, 0))

    async def publish(self, p: int, outgoing: list[Outgoing]) -> None:
        """A transaction on partition p's producer that consumes nothing (SLA escalations).
        The caller holds the partition's lock and has sealed audit events on its chain."""
        lane = self._owner.lanes[p]
        try:
            outgoing = [*outgoing, *self._checkpoint(lane.chain)]
            metadata = await lane.producer.commit(outgoing, {}, self._settings.kafka.group_id)
        except InfrastructureError:
            lane.chain.rollback()
            raise
        lane.chain.commit()
        await self._update_index(lane, outgoing, metadata, Applied())

    def _checkpoint(self, chain: AuditChain) -> list[Outgoing]:
        """The audit chain's checkpoint when one is due: in the transaction that commits the
        events it vouches for, so it is written exactly when they are."""
        record = checkpoint_record(self._topics.audit, chain, int(time.time() * 1000))
        return [record] if record is not None else []

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
        records = ((o.key, o.value, o.headers) for o in written)
        upserts, removals = index_changes(records, p, [o.hold for o in written])
        last = written_to.get(TopicPartition(self._topics.holds, p), -1)
        applied_offsets = {(self._topics.holds, p): last + 1} if last >= 0 else {}
        switches = [(p, e) for e in applied.switches]
        if not (upserts or removals or applied.results or switches):
            return
        try:
            await self._index.apply(upserts, removals, applied.results, applied_offsets, switches,
                                    follow=True)  # fmt: skip
        except InfrastructureError as exc:
            self._metrics.infrastructure_errors.labels(component="redis").inc()
            await self._owner.drop(lane)
            raise IndexFollowError(str(exc)) from exc

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
        for (domain, pool), n in tally.fallbacks.items():
            m.fallback_routed.labels(domain=domain, pool=pool).inc(n)
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
        for kind, pool in applied.moves:
            m.holds_moved.labels(kind=kind, pool=pool).inc()
        for kind in applied.calibration_events:
            m.calibration_events.labels(type=kind).inc()
        self.committed_records += inputs
        self.last_commit_monotonic = time.monotonic()
