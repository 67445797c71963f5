"""Three gateway instances against three Kafka brokers (replication factor 3,
min.insync.replicas 2): one broker is killed while records stream through and started again;
a read_committed reader of the delivered topic sees every record exactly once, and the
gateways kept committing while the broker was down.

The cluster is ``deploy/local/cluster.py`` (its own ports, beside the one-broker stack,
which provides Redis); this test starts it and stops it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from hitl_gateway.admin import ensure_topics
from hitl_gateway.settings import KafkaSettings, Settings, TopicSettings

from .kafka_io import committed_offsets, delete_topics, fresh_settings, read_all, wait_until
from .processes import GatewayProcess

pytestmark = pytest.mark.integration

CLUSTER = Path(__file__).resolve().parents[2] / "deploy" / "local" / "cluster.py"
BOOTSTRAP = "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"
BACKLOG = 15_000
FEED_PER_S = 2_000


def _cluster(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(CLUSTER), *args], capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    _cluster("up")
    try:
        yield BOOTSTRAP
    finally:
        _cluster("down", "--purge")


def _record(i: int) -> tuple[bytes, bytes]:
    return f"k{i % 300}".encode(), orjson.dumps({"id": f"r{i}", "domain": "d", "output": i})


async def test_three_gateways_lose_nothing_and_duplicate_nothing_when_a_broker_dies(
    cluster: str, tmp_path: Path
) -> None:
    base = fresh_settings()
    kafka = base.kafka.model_dump()
    kafka.update(bootstrap_servers=cluster, session_timeout_ms=6_000, max_batch_records=500)
    topics = TopicSettings(**{**base.topics.model_dump(), "replication_factor": 3,
                              "min_insync_replicas": 2})  # fmt: skip
    settings: Settings = base.model_copy(update={"kafka": KafkaSettings(**kafka), "topics": topics})
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=cluster, enable_idempotence=True, linger_ms=5)
    await producer.start()
    produced = 0

    async def send(n: int) -> None:
        nonlocal produced
        for i in range(produced, produced + n):
            key, value = _record(i)
            await producer.send(settings.topics.outputs, value, key=key)
        await producer.flush()
        produced += n

    stop_feed = asyncio.Event()

    async def feed() -> None:
        while not stop_feed.is_set():
            await send(FEED_PER_S // 10)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_feed.wait(), 0.1)

    async def committed() -> int:
        # The reader's own admin client meets the dead broker too (it may have been the
        # group's coordinator): it retries, as any client would.
        for _ in range(60):
            try:
                return sum((await committed_offsets(settings)).values())
            except KafkaError:
                await asyncio.sleep(0.5)
        return sum((await committed_offsets(settings)).values())

    gateways = [GatewayProcess(settings, tmp_path, f"gw{i}") for i in range(3)]
    feeding: asyncio.Task[None] | None = None
    try:
        await send(BACKLOG)
        for gateway in gateways:
            gateway.start()

        async def started() -> bool:
            return await committed() > 2_000

        await wait_until(started, timeout_s=90, interval_s=0.5)
        feeding = asyncio.create_task(feed())
        await asyncio.to_thread(_cluster, "stop-broker", "2", "--kill")
        at_kill = await committed()
        killed = asyncio.get_running_loop().time()

        async def progressed() -> bool:
            return await committed() > at_kill

        # Progress while the broker is down: once the group and transaction coordinators
        # and the partition leaders it held have moved (up to a session timeout and an
        # election), commits resume on the two brokers left.
        with contextlib.suppress(TimeoutError):
            await wait_until(progressed, timeout_s=45, interval_s=0.5)
        during = await committed()
        await asyncio.sleep(max(0.0, 8 - (asyncio.get_running_loop().time() - killed)))
        await asyncio.to_thread(_cluster, "start-broker", "2")
        await asyncio.sleep(3)
        stop_feed.set()
        await feeding
        total = produced

        async def drained() -> bool:
            return await committed() >= total

        await wait_until(drained, timeout_s=180, interval_s=0.5)
        assert all(g.running for g in gateways), "a gateway exited"
    finally:
        stop_feed.set()
        if feeding is not None:
            await asyncio.gather(feeding, return_exceptions=True)
        await producer.stop()
        for gateway in gateways:
            gateway.terminate()
        for gateway in gateways:
            if gateway.proc is not None:
                gateway.wait(60)
    assert during > at_kill, "the gateways made no progress in 45 s while a broker was down"
    delivered = await read_all(settings.topics.delivered, timeout_s=90, bootstrap=cluster)
    ids = Counter(orjson.loads(r.value)["id"] for r in delivered)
    missing = {f"r{i}" for i in range(total)} - set(ids)
    duplicates = {k: n for k, n in ids.items() if n > 1}
    assert not missing, f"{len(missing)} lost, e.g. {sorted(missing)[:5]}"
    assert not duplicates, f"{len(duplicates)} duplicated, e.g. {list(duplicates)[:5]}"
    assert len(delivered) == total
    for gateway in gateways:
        assert gateway.wait(1) == 0, gateway.log()[-2_000:]
    await delete_topics(settings)
