"""One batch, top to bottom: fetch -> route (routing.py) -> produce -> commit, per partition.

Each input partition's records, their outputs and their offsets commit in one Kafka
transaction on that partition's own producer. A failed transaction is aborted and the
partition rewound, so infrastructure failures never become committed progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from hitl_gateway.errors import FencedError, InfrastructureError
from hitl_gateway.metrics import GatewayMetrics
from hitl_gateway.policy.store import PolicyStore
from hitl_gateway.routing import Router, Tally
from hitl_gateway.settings import Settings
from hitl_gateway.sink import PartitionProducer
from hitl_gateway.source import Batch, Source

log = structlog.get_logger(__name__)


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
        self, settings: Settings, metrics: GatewayMetrics, policies: PolicyStore, router: Router
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._policies = policies
        self._router = router
        self._source = Source(settings.kafka, settings.topics.outputs, owner=self)
        # Ownership of an input partition = its started producer + the next offset to process.
        self._producers: dict[TopicPartition, PartitionProducer] = {}
        self._next_offset: dict[TopicPartition, int] = {}
        # Assigned, but the producer could not be started yet: retried by the run loop.
        self._pending: set[TopicPartition] = set()
        # Held while a batch is processed and by the rebalance callbacks: a revoke waits for
        # the in-flight batch to commit. Never held across getmany, which blocks while a
        # reassignment is in progress (that is, until the callbacks have run).
        self._lock = asyncio.Lock()
        self.committed_records = 0
        self.last_commit_monotonic = time.monotonic()

    async def start(self) -> None:
        await self._source.start()

    async def stop(self) -> None:
        await self._source.stop()
        async with self._lock:
            await self._release(set(self._producers))

    # -- partition ownership (called by the consumer's rebalance listener) ----------------

    async def partitions_assigned(self, tps: set[TopicPartition]) -> None:
        async with self._lock:
            self._pending |= tps
            try:
                await self._take_ownership()
            except InfrastructureError as exc:
                # aiokafka swallows listener errors; the run loop retries the pending ones.
                log.warning("partition_ownership_deferred", error=str(exc))
            log.info("partitions_assigned", partitions=_names(tps))

    async def partitions_revoked(self, tps: set[TopicPartition]) -> None:
        async with self._lock:
            await self._release(tps)
            self._pending -= tps
            log.info("partitions_revoked", partitions=_names(tps))

    async def _take_ownership(self) -> None:
        """Start each pending partition's producer, then re-read its committed offset.

        aiokafka fetches committed offsets before calling the assign listener, while a
        previous owner's transaction may still be open, so a batch fetched meanwhile may
        start too early. ``init_transactions`` (in ``start``) completes or aborts that
        transaction; only the offset read afterwards is current. Records below it are
        never processed (see ``_process``).
        """
        new = {tp: self._new_producer(tp) for tp in self._pending}
        results = await asyncio.gather(*(p.start() for p in new.values()), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        for tp, producer in new.items():
            if not producer.started:
                continue
            try:
                committed = await self._source.committed(tp)
            except KafkaError as exc:
                await producer.stop()
                failures.append(InfrastructureError(f"committed offset of {tp}: {exc!r}"))
                continue
            self._producers[tp] = producer
            self._pending.discard(tp)
            if committed is None:
                await self._source.seek_to_beginning(tp)
            else:
                self._next_offset[tp] = committed
                self._source.seek(tp, committed)
        self._metrics.assigned_partitions.set(len(self._producers))
        if failures:
            raise InfrastructureError(f"could not take {len(failures)} partition(s): {failures[0]}")

    def _new_producer(self, tp: TopicPartition) -> PartitionProducer:
        return PartitionProducer(self._settings.kafka, tp, self._settings.limits.max_record_bytes)

    async def _release(self, tps: set[TopicPartition]) -> None:
        producers = [self._producers.pop(tp) for tp in tps if tp in self._producers]
        for tp in tps:
            self._next_offset.pop(tp, None)
        await asyncio.gather(*(p.stop() for p in producers))
        self._metrics.assigned_partitions.set(len(self._producers))

    # -- the run loop ----------------------------------------------------------------------

    async def run(
        self,
        stop: asyncio.Event,
        *,
        max_records: int | None = None,
        idle_timeout_s: float | None = None,
    ) -> None:
        """Process batches until ``stop`` is set (or a test/load-test stop condition holds)."""
        kafka = self._settings.kafka
        runtime = self._settings.runtime
        backoff = Backoff(runtime.retry_backoff_initial_s, runtime.retry_backoff_max_s)
        last_activity = time.monotonic()
        while not stop.is_set():
            try:
                if self._pending:
                    async with self._lock:
                        await self._take_ownership()
                batch = await self._fetch(kafka.poll_timeout_ms, kafka.max_batch_records)
                if batch:
                    async with self._lock:
                        await self._process(batch)
                    last_activity = time.monotonic()
                backoff.reset()
            except InfrastructureError as exc:
                delay = backoff.next_delay()
                self._metrics.infrastructure_errors.labels(component="kafka").inc()
                log.warning("infrastructure_error_retrying", error=str(exc), retry_in_s=delay)
                await _wait(stop, delay)
            if max_records is not None and self.committed_records >= max_records:
                log.info("record_limit_reached", committed_records=self.committed_records)
                return
            if idle_timeout_s is not None and time.monotonic() - last_activity > idle_timeout_s:
                log.info("idle_timeout_reached", idle_timeout_s=idle_timeout_s)
                return

    async def _fetch(self, timeout_ms: int, max_records: int) -> Batch:
        try:
            return await self._source.fetch(timeout_ms, max_records)
        except KafkaError as exc:
            raise InfrastructureError(f"fetch failed: {exc!r}") from exc

    async def _process(self, batch: Batch) -> None:
        started = time.perf_counter()
        jobs = []
        for tp, fetched in batch.items():
            producer = self._producers.get(tp)
            if producer is None:
                # Not (or no longer) owned: revoked, fenced or pending after this batch was
                # fetched. Taking ownership seeks it to the committed offset.
                continue
            # A batch fetched before ownership settled may start below the committed offset.
            floor = self._next_offset.get(tp, -1)
            records = [r for r in fetched if r.offset >= floor]
            if records:
                jobs.append(self._commit_partition(tp, producer, records))
        results = await asyncio.gather(*jobs, return_exceptions=True)
        self._metrics.batch_seconds.observe(time.perf_counter() - started)
        errors = [r for r in results if isinstance(r, BaseException)]
        for error in errors:
            if not isinstance(error, InfrastructureError):
                raise error
        if errors:
            raise errors[0]

    async def _commit_partition(
        self, tp: TopicPartition, producer: PartitionProducer, records: list[Any]
    ) -> None:
        # One policy set per partition batch: a reload never splits a batch.
        outgoing, tally = await self._router.route(records, self._policies.current)
        offsets = {tp: records[-1].offset + 1}
        try:
            await producer.commit(outgoing, offsets, self._settings.kafka.group_id)
        except FencedError:
            # Paused until the group reassigns it (assignment resets pauses).
            log.error("partition_fenced", partition=_names({tp}))
            self._source.pause(tp)
            await self._release({tp})
            raise
        except InfrastructureError:
            self._metrics.transactions.labels(outcome="abort").inc()
            self._source.seek(tp, records[0].offset)
            if not producer.started:  # dropped after a failed abort: take it afresh
                await self._release({tp})
                self._pending.add(tp)
            raise
        self._next_offset[tp] = offsets[tp]
        self._account(tally, len(records))

    def _account(self, tally: Tally, count: int) -> None:
        m = self._metrics
        m.transactions.labels(outcome="commit").inc()
        m.records_consumed.inc(count)
        m.records_delivered.inc(tally.delivered)
        m.review_tasks.inc(tally.review_tasks)
        m.batch_records.observe(count)
        for (domain, route), n in tally.routes.items():
            m.records_routed.labels(domain=domain, route=route).inc(n)
        for reason, n in tally.dead_letters.items():
            m.records_dead_lettered.labels(reason=reason).inc(n)
        self.committed_records += count
        self.last_commit_monotonic = time.monotonic()


async def _wait(stop: asyncio.Event, delay_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay_s)


def _names(tps: set[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in tps)
