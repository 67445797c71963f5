"""Records whose header name is not UTF-8 (kcat and librdkafka write any bytes; aiokafka's C
parser refuses them and used to fail ``getmany``, stopping the gateway at that offset): each
one is dead-lettered with its raw bytes and coordinates, the rest of its batch and of its fetch
is delivered, and the gateway keeps running. With ``poison_records=fail`` it stops instead,
naming the partition and offset. (Both tests failed on the code before the tolerant path: the
gateway died with ``UnicodeDecodeError``.)"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.produce import ProduceRequest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from hitl_gateway import poison
from hitl_gateway.admin import ensure_topics
from hitl_gateway.app import Gateway
from hitl_gateway.settings import Settings

from ..raw_batches import Record, raw_batch
from .kafka_io import (
    BOOTSTRAP,
    committed_offsets,
    delete_topics,
    fresh_settings,
    produce,
    read_all,
    wait_until,
)

BAD_NAME = b"\xe9t\xe9"  # "été" in Latin-1: not UTF-8
GOOD = b'{"id": "%s", "domain": "support-chat", "confidence": 0.5, "output": "ok"}'
DECISION = b'{"decision_id": "d-1", "item_id": "i-1", "reviewer": "r", "verdict": "approve"}'


def _kcat(topic: str, partition: int, records: list[bytes], *headers: bytes) -> None:
    """Produce ``key\\tvalue`` lines with kcat, in one invocation: one batch (linger 500 ms),
    uncompressed; every record gets ``headers`` (raw ``name=value`` bytes)."""
    kcat = shutil.which("kcat")
    if kcat is None:
        pytest.fail("kcat is not installed; run `make stack-up` (it installs kcat)")
    args = [kcat.encode(), b"-P", b"-b", BOOTSTRAP.encode(), b"-t", topic.encode()]
    args += [b"-p", str(partition).encode(), b"-K", b"\t", b"-z", b"none", b"-X", b"linger.ms=500"]
    for header in headers:
        args += [b"-H", header]
    subprocess.run(args, input=b"".join(r + b"\n" for r in records), check=True, timeout=60)


async def _produce_batch(topic: str, partition: int, batch: bytes) -> int:
    """Send one hand-built batch as it is (one produce request); returns its base offset."""
    client = AIOKafkaClient(bootstrap_servers=BOOTSTRAP)
    await client.bootstrap()
    try:
        await client._wait_on_metadata(topic)
        leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
        request = ProduceRequest(None, -1, 30_000, [(topic, [(partition, batch)])])
        response = await client.send(leader, request)
    finally:
        await client.close()
    ((_, partitions),) = response.topics
    ((_, error, base_offset, *_),) = partitions
    assert error == 0, f"produce failed with error code {error}"
    return int(base_offset)


def _good(key: bytes) -> bytes:
    return key + b"\t" + GOOD % key


def _record(key: bytes, headers: list[tuple[bytes, bytes | None]]) -> Record:
    return (key, GOOD % key, headers)


async def test_poison_records_are_dead_lettered_and_their_batches_delivered(
    settings: Settings,
) -> None:
    topic = settings.topics.outputs
    # Partition 0, with kcat: three batches in one fetch; the middle one is two records with
    # the bad header name (kcat puts its -H headers on every record of the invocation).
    _kcat(topic, 0, [_good(b"a0"), _good(b"a1"), _good(b"a2")])
    _kcat(topic, 0, [_good(b"kp0"), _good(b"kp1")], BAD_NAME + b"=v")
    _kcat(topic, 0, [_good(b"b0"), _good(b"b1")])
    # Partitions 1 and 2: one batch each, the bad record between good ones (gzip on 2).
    layout: list[tuple[bytes, list[tuple[bytes, bytes | None]]]] = [
        (b"0", [(b"trace", b"t")]),
        (b"1", []),
        (b"p", [(b"trace", b"t"), (BAD_NAME, b"v"), (b"after", None)]),
        (b"3", []),
        (b"4", [(b"trace", b"t")]),
    ]
    base = {
        1: await _produce_batch(topic, 1, raw_batch([_record(b"c" + n, h) for n, h in layout])),
        2: await _produce_batch(
            topic, 2, raw_batch([_record(b"g" + n, h) for n, h in layout], gzip=True)
        ),
    }
    # A decision with the bad header name: refused, not a crash of the applier.
    _kcat(settings.topics.review_decisions, 0, [b"i-1\t" + DECISION], BAD_NAME + b"=v")

    good = {b"a0", b"a1", b"a2", b"b0", b"b1", b"c0", b"c1", b"c3", b"c4"}
    good |= {b"g0", b"g1", b"g3", b"g4"}
    poisoned = {b"kp0": (0, 3), b"kp1": (0, 4), b"cp": (1, base[1] + 2), b"gp": (2, base[2] + 2)}
    registry = CollectorRegistry()
    gateway = Gateway(settings, registry)
    with capture_logs() as logs:
        task = asyncio.create_task(gateway.run())
        try:

            async def all_committed() -> bool:
                if task.done():
                    task.result()  # the gateway died: its error fails the test
                refused = registry.get_sample_value(
                    "hitl_decisions_refused_total", {"reason": "malformed"}
                )
                return gateway.pipeline.committed_records >= len(good) + 4 and refused == 1

            await wait_until(all_committed, timeout_s=60)
            await produce(topic, [(b"later", GOOD % b"later")])  # still running

            async def later_committed() -> bool:
                return gateway.pipeline.committed_records >= len(good) + 5

            await wait_until(later_committed, timeout_s=30)
            assert not task.done()
        finally:
            gateway.request_stop()
            await asyncio.wait_for(task, 30)

    delivered = await read_all(settings.topics.delivered)
    assert sorted(r.key for r in delivered) == sorted([*good, b"later"])
    dead = await read_all(settings.topics.deadletter)
    assert sorted(r.key for r in dead) == sorted(poisoned)
    for rec in dead:
        h = dict(rec.headers)
        partition, offset = poisoned[rec.key]
        assert h["hitl.dlq.reason"] == b"bad_header"
        assert repr(BAD_NAME).encode() in h["hitl.dlq.message"]
        assert rec.value == GOOD % rec.key, "the original bytes are kept for replay"
        assert h["hitl.source.topic"] == topic.encode()
        assert int(h["hitl.source.partition"]) == partition
        assert int(h["hitl.source.offset"]) == offset
        # The bad header, in its place: its name's raw bytes, then its value.
        bad = [("hitl.dlq.header.key", BAD_NAME), ("hitl.dlq.header.value", b"v")]
        own = [("trace", b"t"), *bad, ("after", b"")] if rec.key in (b"cp", b"gp") else bad
        assert list(rec.headers[: len(own)]) == own
        rest = [k for k, _ in rec.headers[len(own) :]]
        assert all(k.startswith("hitl.") and "header" not in k for k in rest), rest
    sample = registry.get_sample_value("hitl_records_dead_lettered_total", {"reason": "bad_header"})
    assert sample == 4

    refusals = [
        event for event in map(_json, await read_all(settings.topics.audit))
        if event.get("type") == "decision_refused"
    ]  # fmt: skip
    assert len(refusals) == 1
    assert refusals[0]["refusal"] == "malformed"
    assert "not UTF-8" in refusals[0]["message"]
    assert refusals[0]["source"]["topic"] == settings.topics.review_decisions

    # The tolerant path was taken once per bad batch, each a single batch holding good records
    # too (partitions 1 and 2) or following one in the same fetch (partition 0).
    seen = {
        (e["partition"], e["offset"], e["batch"])
        for e in logs
        if e["event"] == "poison_record" and e["topic"] == topic
    }
    assert seen == {
        (0, 3, "3-4"),
        (1, base[1] + 2, f"{base[1]}-{base[1] + 4}"),
        (2, base[2] + 2, f"{base[2]}-{base[2] + 4}"),
    }


@pytest.fixture
async def fail_settings() -> AsyncIterator[Settings]:
    s = fresh_settings(poison_records="fail")
    await ensure_topics(s)
    yield s
    await delete_topics(s)
    poison.install("deadletter")  # process-wide: later tests in this process expect it


async def test_with_fail_the_gateway_stops_naming_partition_and_offset(
    fail_settings: Settings,
) -> None:
    s = fail_settings
    _kcat(s.topics.outputs, 1, [_good(b"a0"), _good(b"a1")])
    _kcat(s.topics.outputs, 1, [_good(b"p")], BAD_NAME + b"=v")
    _kcat(s.topics.outputs, 1, [_good(b"b0")])
    gateway = Gateway(s, CollectorRegistry())
    task = asyncio.create_task(gateway.run())
    with pytest.raises(poison.PoisonRecordError, match=r"partition 1 at offset 2\b") as failure:
        await asyncio.wait_for(task, 60)
    assert s.topics.outputs in str(failure.value)
    assert isinstance(failure.value.__cause__, UnicodeDecodeError)  # aiokafka's own error
    assert (await committed_offsets(s)).get(1, 0) <= 2, "nothing past the bad record committed"


def _json(record: Any) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads(record.value)
    return value
