"""The gateway's consumer asks the broker for fewer, larger fetches (the real broker).

``fetch_min_bytes`` and ``fetch_max_wait_ms`` reach the broker through the gateway's own
consumer (``Source``): a trickle of 1 KB records then arrives in a few fetches of many
records, where a consumer that asks for a single byte gets nearly one fetch per record.
Nothing is timed: the counts follow from the broker's rule (a fetch is answered once
``fetch_min_bytes`` are there, or after ``fetch_max_wait_ms``).
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer, TopicPartition

from hitl_gateway.settings import KafkaSettings, Settings
from hitl_gateway.source import Source

from .kafka_io import BOOTSTRAP, wait_until

RECORDS = 60
SPACING_S = 0.01  # 60 records over about 0.6 s


class _Owner:
    def __init__(self) -> None:
        self.assigned: set[TopicPartition] = set()

    async def partitions_assigned(self, tps: set[TopicPartition]) -> None:
        self.assigned |= tps

    async def partitions_revoked(self, tps: set[TopicPartition]) -> None:
        self.assigned -= tps


async def _fetches(kafka: KafkaSettings, topic: str) -> list[int]:
    """Trickle RECORDS records of 1 KB into ``topic`` while the gateway's consumer fetches:
    the number of records in each fetch that brought some."""
    owner = _Owner()
    source = Source(kafka, [topic], owner)
    await source.start()
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=0)
    await producer.start()
    sizes: list[int] = []
    try:
        # Join the group first (a fetch drives it), so the trickle is read as it comes.
        async def joined() -> bool:
            await source.fetch(50)
            return bool(owner.assigned)

        await wait_until(joined, timeout_s=30)

        async def trickle() -> None:
            for _ in range(RECORDS):
                await producer.send_and_wait(topic, b"x" * 1024, key=b"k", partition=0)
                await asyncio.sleep(SPACING_S)

        sending = asyncio.create_task(trickle())
        while sum(sizes) < RECORDS:
            batch = await source.fetch(200)
            got = sum(len(records) for records in batch.values())
            if got:
                sizes.append(got)
            assert not sending.done() or sending.exception() is None
        await sending
    finally:
        await producer.stop()
        await source.stop()
    return sizes


async def test_the_consumer_waits_for_fetch_min_bytes(settings: Settings) -> None:
    # 64 KB is about 60 records: the broker answers when that much is there or after 400 ms.
    coalescing = settings.kafka.model_copy(
        update={"fetch_min_bytes": 64 * 1024, "fetch_max_wait_ms": 400}
    )
    sizes = await _fetches(coalescing, settings.topics.outputs)
    assert sum(sizes) == RECORDS
    # 0.6 s of trickle: at most two waits of 400 ms run out, and one fetch fills up.
    assert len(sizes) <= 4, sizes

    # The contrast: asking for one byte, records come nearly one fetch each.
    eager = settings.kafka.model_copy(update={"fetch_min_bytes": 1, "fetch_max_wait_ms": 400})
    sizes = await _fetches(eager, settings.topics.review_decisions)
    assert sum(sizes) == RECORDS
    assert len(sizes) >= 20, sizes
