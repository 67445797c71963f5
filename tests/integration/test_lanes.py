"""Lanes pipeline each partition's transactions; a failed one rewinds its lane.

Small batches over a pre-loaded backlog keep every lane holding records fetched beyond the
batch in flight, so an aborted transaction must also give those back to the consumer.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from prometheus_client import CollectorRegistry

from hitl_gateway.app import Gateway
from hitl_gateway.errors import RedisUnavailable
from hitl_gateway.routing import Router
from hitl_gateway.settings import Settings
from hitl_gateway.sink import PartitionProducer

from .kafka_io import (
    BOOTSTRAP,
    committed_offsets,
    end_offset_total,
    produce,
    read_all,
    wait_until,
)

N = 900


def _record(seq: int) -> tuple[bytes, bytes]:
    body = {"id": f"lane-{seq}", "domain": "support-chat", "confidence": 0.9, "language": "en",
            "output": {"seq": seq}}  # fmt: skip
    return f"key-{seq % 31}".encode(), orjson.dumps(body)


@pytest.mark.parametrize("failing", ["produce", "offsets"])
async def test_aborted_transactions_rewind_their_lane_nothing_lost_duplicated_or_reordered(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    settings = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"max_batch_records": 25}),
            "runtime": settings.runtime.model_copy(update={"retry_backoff_initial_s": 0.05}),
        }
    )
    sent = await produce(settings.topics.outputs, [_record(i) for i in range(N)])
    calls = itertools.count()
    failed = 0

    def flaky(real: Any) -> Any:
        async def call(self: Any, *args: Any) -> Any:
            nonlocal failed
            if next(calls) % 5 == 1:  # inside the transaction: the real abort path runs
                failed += 1
                raise KafkaConnectionError("injected: broker connection lost mid-transaction")
            return await real(self, *args)

        return call

    if failing == "produce":
        real_send = PartitionProducer.send_batches
        monkeypatch.setattr(PartitionProducer, "send_batches", flaky(real_send))
    else:  # joining the offsets, while the transaction's records are in flight
        real_join = AIOKafkaProducer.send_offsets_to_transaction
        monkeypatch.setattr(AIOKafkaProducer, "send_offsets_to_transaction", flaky(real_join))
    registry = CollectorRegistry()
    gateway = Gateway(settings, registry)
    await asyncio.wait_for(gateway.run(max_records=N), timeout=180)

    assert failed >= 5
    aborts = registry.get_sample_value("hitl_kafka_transactions_total", {"outcome": "abort"})
    assert aborts == failed
    delivered = await read_all(settings.topics.delivered)
    by_partition: defaultdict[int, list[bytes]] = defaultdict(list)
    for r in delivered:
        by_partition[r.partition].append(r.value)
    expected: defaultdict[int, list[bytes]] = defaultdict(list)
    last: defaultdict[int, int] = defaultdict(lambda: -1)
    for s in sent:
        expected[s.partition].append(s.value)
        last[s.partition] = max(last[s.partition], s.offset)
    assert len(expected) > 1  # several lanes at work
    # Exactly once and in input order, partition by partition.
    assert dict(by_partition) == dict(expected)
    assert await committed_offsets(settings) == {p: o + 1 for p, o in last.items()}


async def _owned(gateway: Gateway, settings: Settings) -> None:
    async def owned() -> bool:
        return len(gateway.pipeline.owned_partitions) == settings.topics.partitions

    await wait_until(owned, timeout_s=60)


async def _trickle(settings: Settings, gap_s: float) -> None:
    """Ten records to one partition (one key), one at a time, ``gap_s`` apart."""
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, enable_idempotence=True)
    await producer.start()
    try:
        for seq in range(10):
            await producer.send_and_wait(settings.topics.outputs, _record(seq)[1], key=b"one")
            await asyncio.sleep(gap_s)
    finally:
        await producer.stop()


async def test_records_arriving_within_the_commit_interval_share_one_transaction(
    settings: Settings,
) -> None:
    settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"commit_interval_ms": 2_000})}
    )
    registry = CollectorRegistry()
    gateway = Gateway(settings, registry)
    running = asyncio.create_task(gateway.run(max_records=10))
    await _owned(gateway, settings)
    await _trickle(settings, gap_s=0.05)  # spread over about half a second
    await asyncio.wait_for(running, timeout=60)

    assert len(await read_all(settings.topics.delivered)) == 10
    # One transaction of ten records, not one per fetch (interval 0 gives several).
    assert registry.get_sample_value("hitl_batch_records_count") == 1
    assert registry.get_sample_value("hitl_batch_records_sum") == 10


async def test_records_are_sent_while_their_transaction_is_open(settings: Settings) -> None:
    """A transaction opens with its first record and sends it at once: the record is on the
    broker, unreadable by read_committed readers, long before the commit interval ends."""
    settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"commit_interval_ms": 12_000})}
    )
    gateway = Gateway(settings, CollectorRegistry())
    running = asyncio.create_task(gateway.run(max_records=1))
    await _owned(gateway, settings)
    sent_at = asyncio.get_running_loop().time()
    await produce(settings.topics.outputs, [_record(0)])
    delivered = settings.topics.delivered

    async def written() -> bool:
        return await end_offset_total(delivered) >= 1

    await wait_until(written, timeout_s=4)
    assert asyncio.get_running_loop().time() - sent_at < 6  # well inside the 12 s interval
    # Written, but in an open transaction: the last stable offset has not moved.
    assert await end_offset_total(delivered, "read_committed") == 0
    assert await end_offset_total(delivered) == 1
    await asyncio.wait_for(running, timeout=60)
    assert [r.value for r in await read_all(delivered)] == [_record(0)[1]]


@pytest.mark.parametrize("exactly_once", [True, False])
async def test_a_failure_in_a_later_chunk_rewinds_the_whole_transaction(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, exactly_once: bool
) -> None:
    """Ten records arrive one by one within one commit interval, each its own chunk; Redis
    fails while the third is routed. The transaction, which already holds the first two,
    aborts and its lane rewinds to its first record: every record is delivered once, in
    order. At-least-once, nothing was produced before the commit, so nothing repeats."""
    settings = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(
                update={"commit_interval_ms": 3_000, "exactly_once": exactly_once}
            ),
            "runtime": settings.runtime.model_copy(update={"retry_backoff_initial_s": 0.05}),
        }
    )
    calls = itertools.count()
    real_route = Router.route

    async def route(self: Router, records: list[Any], *args: Any, **kwargs: Any) -> Any:
        if next(calls) == 2:
            raise RedisUnavailable("injected: Redis lost while routing the third chunk")
        return await real_route(self, records, *args, **kwargs)

    monkeypatch.setattr(Router, "route", route)
    registry = CollectorRegistry()
    gateway = Gateway(settings, registry)
    running = asyncio.create_task(gateway.run(max_records=10))
    await _owned(gateway, settings)
    await _trickle(settings, gap_s=0.1)  # one record per fetch
    await asyncio.wait_for(running, timeout=60)

    assert next(calls) > 3  # the failure happened, and routing went on after it
    aborts = registry.get_sample_value("hitl_kafka_transactions_total", {"outcome": "abort"})
    assert aborts == 1
    delivered = await read_all(settings.topics.delivered)
    assert [r.value for r in delivered] == [_record(seq)[1] for seq in range(10)]
    written = await end_offset_total(settings.topics.delivered)
    if exactly_once:
        # The first two chunks were on the broker before the abort: two records and the
        # abort marker, then the ten again and at least one commit marker.
        assert written >= 2 + 1 + 10 + 1
    else:
        assert written == 10  # nothing produced by the failed attempt
