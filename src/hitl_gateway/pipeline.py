"""The gateway's stream: fetch -> per-partition lanes -> route / apply decisions -> produce
-> commit -> index.

The gateway consumes the outputs and decisions topics. Three rooms share the work:

- ``ownership.Ownership``: which partitions this instance owns (the rebalance listener's
  callbacks), taking them (producer, hold index, audit chain, committed offsets) and giving
  them up;
- ``commit.Committer``: each owned partition's lane task, one transaction at a time (route,
  apply decisions, produce, commit with the input offsets, index, metrics), with rewinds and
  backoff on infrastructure failures;
- this module: the run loop, which fetches and hands each owned partition's records to its
  lane, so one partition routes while another waits for its commit round trips.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from aiokafka import TopicPartition

from hitl_gateway.audit import AuditChain, Sealing
from hitl_gateway.commit import Backoff, Committer
from hitl_gateway.errors import InfrastructureError
from hitl_gateway.holds import HoldIndex
from hitl_gateway.lane import Lane
from hitl_gateway.metrics import GatewayMetrics
from hitl_gateway.ownership import Ownership
from hitl_gateway.policy.store import PolicyStore
from hitl_gateway.recovery import Reader
from hitl_gateway.review.applier import DecisionApplier
from hitl_gateway.routing import Router
from hitl_gateway.settings import Settings
from hitl_gateway.sink import Outgoing
from hitl_gateway.source import Batch, Source

log = structlog.get_logger(__name__)


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        metrics: GatewayMetrics,
        policies: PolicyStore,
        router: Router,
        applier: DecisionApplier,
        *,
        index: HoldIndex,
        sealing: Sealing,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        topics = [settings.topics.outputs, settings.topics.review_decisions]
        self._source = Source(settings.kafka, topics, owner=self)
        self._reader = Reader(settings.kafka)
        self._ownership = Ownership(
            settings, metrics, self._source, self._reader, index,
            start_lane=self._start_lane, sealing=sealing,
        )  # fmt: skip
        self._committer = Committer(
            settings,
            metrics,
            policies=policies,
            router=router,
            applier=applier,
            index=index,
            source=self._source,
            ownership=self._ownership,
        )

    def _start_lane(self, lane: Lane) -> asyncio.Task[None]:
        return asyncio.create_task(self._committer.drive(lane), name=f"lane-{lane.partition}")

    # -- what the rest of the gateway reads -------------------------------------------------

    @property
    def owned_partitions(self) -> set[int]:
        return set(self._ownership.lanes)

    @property
    def joined(self) -> bool:
        return self._ownership.joined

    @property
    def committed_records(self) -> int:
        return self._committer.committed_records

    @property
    def last_commit_monotonic(self) -> float:
        return self._committer.last_commit_monotonic

    async def broker_reachable(self) -> bool:
        return await self._source.ping(timeout_s=5.0)

    async def lag(self) -> list[tuple[TopicPartition, int, int]]:
        return await self._source.lag()

    def partition_lock(self, partition: int) -> asyncio.Lock | None:
        """Partition p's write lock while it is owned: whoever holds it is the only writer of
        p's transactions and audit chain. Check ``partition_lock(p)`` again once acquired:
        a partition released and taken back meanwhile has a new lock."""
        lane = self._ownership.lanes.get(partition)
        return lane.lock if lane is not None else None

    def chain(self, partition: int) -> AuditChain:
        return self._ownership.lanes[partition].chain

    async def publish(self, p: int, outgoing: list[Outgoing]) -> None:
        """A transaction on partition p's producer that consumes nothing (SLA escalations).
        The caller holds ``partition_lock(p)`` and has sealed audit events on ``chain(p)``."""
        await self._committer.publish(p, outgoing)

    # -- life cycle, and the consumer's rebalance listener -----------------------------------

    async def start(self) -> None:
        await self._reader.start()
        await self._source.start()

    async def stop(self) -> None:
        await self._source.stop()
        await self._ownership.stop()
        await self._reader.stop()

    async def partitions_assigned(self, tps: set[TopicPartition]) -> None:
        await self._ownership.partitions_assigned(tps)

    async def partitions_revoked(self, tps: set[TopicPartition]) -> None:
        await self._ownership.partitions_revoked(tps)

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
            if self._committer.fatal is not None:
                raise self._committer.fatal
            try:
                if self._ownership.pending:
                    await self._ownership.take_pending()
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
            committed = self._committer.committed_records
            if max_records is not None and committed >= max_records:
                log.info("record_limit_reached", committed_records=committed)
                return
            idle_since = max(last_activity, self._committer.last_commit_monotonic)
            if idle_timeout_s is not None and time.monotonic() - idle_since > idle_timeout_s:
                log.info("idle_timeout_reached", idle_timeout_s=idle_timeout_s)
                return

    async def _fetch(self, timeout_ms: int) -> Batch:
        """Everything the consumer has buffered. Records left in its buffer would hold back
        fetching for every other partition on that broker (aiokafka sends no fetch to a node
        while one of its partitions has recent unconsumed data), so a lane's backlog is
        bounded by pausing its partitions instead (``_dispatch``)."""
        return await self._source.fetch(timeout_ms)

    def _dispatch(self, batch: Batch) -> None:
        """Hand each owned partition's records to its lane; pause a lane's partitions while
        it has more than two batches waiting. Synchronous, and run in the same step as the
        fetch that drained them: a lane's rewind (a seek) can never fall between the two and
        let records from before it through."""
        high = 2 * self._settings.kafka.max_batch_records
        for tp, fetched in batch.items():
            lane = self._ownership.lanes.get(tp.partition)
            if lane is None:
                # Not (or no longer) owned: revoked, fenced or pending after this batch was
                # fetched. Taking ownership seeks it to the committed offset.
                continue
            # A batch fetched before ownership settled may start below the committed offset.
            floor = self._ownership.next_offset.get(tp, -1)
            records = fetched if fetched[0].offset >= floor else [
                r for r in fetched if r.offset >= floor
            ]  # fmt: skip
            lane.add(tp, records)
            if lane.count >= high:
                self._ownership.pause(lane)
