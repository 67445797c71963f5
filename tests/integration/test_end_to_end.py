"""Valid records flow through the real broker and gateway: all delivered once, bytes intact."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import orjson
from prometheus_client import CollectorRegistry

from hitl_gateway import __version__
from hitl_gateway.app import Gateway
from hitl_gateway.settings import Settings

from .kafka_io import committed_offsets, end_offset_total, produce, read_all

N = 3_000
KEYS = 40


def _record(seq: int) -> tuple[bytes, bytes]:
    key = f"key-{seq % KEYS}"
    body = {
        "id": f"item-{seq}",
        "domain": "support-chat",
        "confidence": (seq % 100) / 100,
        "language": "en",
        "output": {"text": f"answer {seq}", "seq": seq, "unicode": "naïve — 日本"},
        "unknown_field": [1, 2, {"kept": True}],
    }
    # Deliberately unusual spacing: the gateway must forward these exact bytes.
    return key.encode(), orjson.dumps(body).replace(b",", b" ,  ")


async def test_every_valid_record_is_delivered_once_with_identical_bytes(
    settings: Settings,
) -> None:
    sent = await produce(
        settings.topics.outputs, [_record(i) for i in range(N)], headers=[("trace", b"abc")]
    )
    registry = CollectorRegistry()
    gateway = Gateway(settings, registry)
    await asyncio.wait_for(gateway.run(max_records=N), timeout=120)

    delivered = await read_all(settings.topics.delivered)
    assert len(delivered) == N
    by_value = {s.value: s for s in sent}
    assert {r.value for r in delivered} == set(by_value), "payload bytes changed or lost"

    # Order per key: a key's records arrive in the order they were produced.
    seqs: dict[bytes, list[int]] = defaultdict(list)
    for rec in delivered:
        seqs[rec.key].append(orjson.loads(rec.value)["output"]["seq"])
    assert len(seqs) == KEYS
    for key, order in seqs.items():
        assert order == sorted(order), f"order broken for {key!r}"

    first = delivered[0]
    headers = dict(first.headers)
    origin = by_value[first.value]
    assert headers["trace"] == b"abc"  # the producer's own headers survive
    assert headers["hitl.route"] == b"pass"
    assert headers["hitl.gateway.version"] == __version__.encode()
    assert headers["hitl.source.topic"] == settings.topics.outputs.encode()
    assert int(headers["hitl.source.partition"]) == origin.partition
    assert int(headers["hitl.source.offset"]) == origin.offset
    inputs = {r.value: r for r in await read_all(settings.topics.outputs)}
    for rec in delivered:  # the producer's timestamp, on the input's partition number
        assert (rec.timestamp, rec.partition) == (
            inputs[rec.value].timestamp, inputs[rec.value].partition
        )  # fmt: skip

    assert registry.get_sample_value("hitl_records_consumed_total") == N
    assert registry.get_sample_value("hitl_records_delivered_total") == N
    routed = {"domain": "support-chat", "route": "pass"}
    assert registry.get_sample_value("hitl_records_routed_total", routed) == N
    assert registry.get_sample_value("hitl_kafka_transactions_total", {"outcome": "abort"}) == 0
    assert await read_all(settings.topics.deadletter) == []


async def test_at_least_once_mode_delivers_everything_and_commits_through_the_group(
    settings: Settings,
) -> None:
    """With exactly_once off: no transactions, the group's offsets follow the acknowledged
    outputs (what a crash can duplicate is the batch in between; nothing is lost)."""
    settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"exactly_once": False})}
    )
    sent = await produce(settings.topics.outputs, [_record(i) for i in range(N)])
    gateway = Gateway(settings, CollectorRegistry())
    await asyncio.wait_for(gateway.run(max_records=N), timeout=120)
    delivered = await read_all(settings.topics.delivered)
    assert sorted(r.value for r in delivered) == sorted(s.value for s in sent)
    last: defaultdict[int, int] = defaultdict(lambda: -1)
    for s in sent:
        last[s.partition] = max(last[s.partition], s.offset)
    assert await committed_offsets(settings) == {p: o + 1 for p, o in last.items()}
    # The producers are idempotent, not transactional: no transaction markers were written,
    # so the delivered log ends exactly at the records.
    assert await end_offset_total(settings.topics.delivered) == N
