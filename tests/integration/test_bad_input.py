"""Malformed records interleaved with good ones: each bad one dead-lettered with the right
reason and its source coordinates, each good one delivered, and the gateway keeps running."""

from __future__ import annotations

import asyncio

import orjson
from prometheus_client import CollectorRegistry

from hitl_gateway.app import Gateway
from hitl_gateway.settings import LimitSettings, Settings

from .kafka_io import produce, read_all, wait_until

MAX_BYTES = 4_096
GOOD = b'{"id": "%d", "domain": "support-chat", "confidence": 0.5, "output": "ok"}'
BAD: list[tuple[bytes | None, str]] = [
    (None, "null_value"),
    (orjson.dumps({"id": "big", "domain": "d", "output": "x" * MAX_BYTES}), "too_large"),
    (b"\xc3\x28 not utf-8", "not_utf8"),
    (b'{"id": "x", "domain": "d"', "not_json"),
    (b"", "not_json"),
    (b'{"id": "x", "domain": "d", "output": NaNx}', "not_json"),
    (b'"just a string"', "not_object"),
    (b"[1, 2]", "not_object"),
    (b"42", "not_object"),
    (b'{"domain": "d"}', "missing_field"),
    (b'{"id": "x"}', "missing_field"),
    (b'{"id": 7, "domain": "d"}', "wrong_type"),
    (b'{"id": "x", "domain": "d", "confidence": "0.9"}', "wrong_type"),
    (b'{"id": "x", "domain": "d", "confidence": true}', "wrong_type"),
    (b'{"id": "x", "domain": "d", "metadata": {"k": 1}}', "wrong_type"),
    (b'{"id": "x", "domain": "d", "confidence": NaN}', "out_of_range"),
    (b'{"id": "x", "domain": "d", "confidence": 1.01}', "out_of_range"),
    (b'{"id": "x", "domain": "d", "confidence": -0.1}', "out_of_range"),
    (b'{"id": "", "domain": "d"}', "out_of_range"),
    (b'{"id": "x", "domain": "d", "language": "english please"}', "invalid_field"),
]


async def test_bad_records_are_dead_lettered_and_the_stream_goes_on(settings: Settings) -> None:
    settings = settings.model_copy(update={"limits": LimitSettings(max_record_bytes=MAX_BYTES)})
    records: list[tuple[bytes | None, bytes | None]] = []
    expected_reason: dict[bytes, str] = {}
    for i, (value, reason) in enumerate(BAD):
        key = f"bad-{i}".encode()
        expected_reason[key] = reason
        records.append((key, value))
        records.append((f"good-{i}".encode(), GOOD % i))
    sent = await produce(settings.topics.outputs, records)
    where = {s.key: s for s in sent}

    registry = CollectorRegistry()
    gateway = Gateway(settings, registry)
    task = asyncio.create_task(gateway.run())
    try:

        async def all_committed() -> bool:
            return gateway.pipeline.committed_records >= len(records)

        await wait_until(all_committed, timeout_s=60)
        dead = await read_all(settings.topics.deadletter)
        assert len(dead) == len(BAD)
        for rec in dead:
            headers = dict(rec.headers)
            origin = where[rec.key]
            assert headers["hitl.dlq.reason"].decode() == expected_reason[rec.key], rec.key
            assert headers["hitl.dlq.message"], "a human-readable message is required"
            assert headers["hitl.source.topic"] == settings.topics.outputs.encode()
            assert int(headers["hitl.source.partition"]) == origin.partition
            assert int(headers["hitl.source.offset"]) == origin.offset
            assert rec.value == origin.value, "the original bytes are kept for replay"

        delivered = await read_all(settings.topics.delivered)
        assert sorted(r.key for r in delivered) == sorted(
            k for k, _ in records if k.startswith(b"good")
        )

        # Still running: a later good record is delivered by the same gateway.
        await produce(settings.topics.outputs, [(b"later", GOOD % 999)])

        async def later_delivered() -> bool:
            return gateway.pipeline.committed_records >= len(records) + 1

        await wait_until(later_delivered, timeout_s=30)
        assert not task.done()
    finally:
        gateway.request_stop()
        await asyncio.wait_for(task, 30)
    for reason in set(expected_reason.values()):
        count = sum(1 for r in expected_reason.values() if r == reason)
        sample = registry.get_sample_value("hitl_records_dead_lettered_total", {"reason": reason})
        assert sample == count, reason
