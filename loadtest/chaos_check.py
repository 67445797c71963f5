"""The fault matrix's verifier: reads every output, dead-letter, hold and audit topic
read_committed (and read_uncommitted, to count what aborted transactions wrote), and
accounts for every id the producer sent."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from chaos_load import Feed, Reviewer
from hitl_gateway.audit_verify import verify
from hitl_gateway.settings import Settings


@dataclass
class Record:
    key: str
    value: bytes | None
    partition: int
    offset: int
    headers: dict[str, bytes]
    timestamp_ms: int = 0


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    committed: bool = True,
    timeout_s: float = 120,
    partitions: int = 6,
) -> list[Record]:
    """Every record of ``topic`` up to its end (the last stable offset when committed)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        isolation_level="read_committed" if committed else "read_uncommitted",
    )  # fmt: skip
    await consumer.start()
    out: list[Record] = []
    try:
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        deadline = time.monotonic() + timeout_s
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not read to its end within {timeout_s}s")
            batch = await consumer.getmany(timeout_ms=500, max_records=5_000)
            for records in batch.values():
                out.extend(
                    Record(
                        r.key.decode() if r.key else "",
                        r.value,
                        r.partition,
                        r.offset,
                        {k: v for k, v in r.headers},
                        r.timestamp,
                    )
                    for r in records
                )
    finally:
        await consumer.stop()
    return out


async def redis_pending(url: str, prefix: str) -> set[str]:
    """The item ids the Redis index holds (``hold:{id}`` hashes)."""
    client = aioredis.Redis.from_url(url)
    try:
        found: set[str] = set()
        async for key in client.scan_iter(match=f"{prefix}hold:*", count=1_000):
            found.add(key.decode()[len(prefix) + len("hold:") :])
        return found
    finally:
        await client.aclose()


@dataclass
class Findings:
    produced: int = 0
    malformed: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    held: int = 0
    held_lost: list[str] = field(default_factory=list)
    pending: int = 0
    unauthorized_applied: list[str] = field(default_factory=list)
    malformed_unaccounted: list[str] = field(default_factory=list)
    audit_verified: bool = False
    audit_problems: list[str] = field(default_factory=list)
    audit_events: int = 0
    aborted_records: int = 0
    index_missing: list[str] = field(default_factory=list)  # pending in Kafka, not in Redis
    index_extra: list[str] = field(default_factory=list)  # in Redis, not pending in Kafka
    refusals: dict[str, int] = field(default_factory=dict)
    pending_ids: set[str] = field(default_factory=set)  # not in the summary
    # When each closed hold's tombstone was written (ms): a hold gone from the Redis index
    # across a Redis restart is accounted for if it was closed by then. Not in the summary.
    closed_at_ms: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in vars(self).items():
            if isinstance(value, set) or name == "closed_at_ms":
                continue
            if isinstance(value, list):
                out[name] = len(value)
                out[f"{name}_examples"] = value[:5]
            else:
                out[name] = value
        return out


def _hold_meta(r: Record) -> dict[str, Any] | None:
    raw = r.headers.get("hitl.hold")
    meta = orjson.loads(raw) if raw and r.value is not None else None
    return meta if isinstance(meta, dict) and "item_id" in meta else None


def _latest_holds(holds: list[Record]) -> tuple[set[str], set[str], set[str]]:
    """From the compacted holds topic: ids ever held blocking, still pending blocking, and
    every open hold (blocking or not: what the Redis index must show)."""
    ever: set[str] = set()
    latest: dict[str, dict[str, Any] | None] = {}
    for r in holds:
        meta = _hold_meta(r)
        if meta is None and r.value is not None:
            continue  # not a hold (a stop switch event)
        latest[r.key] = meta
        # Gold items (known answers the gateway mixes into queues) close without delivery.
        if meta is not None and meta.get("blocking", True) and not meta.get("gold"):
            ever.add(r.key)
    open_any = {k for k, m in latest.items() if m is not None}
    return ever, {k for k in open_any if k in ever}, open_any


def _malformed_ok(r: Record, source_topic: str) -> bool:
    h = r.headers
    return bool(h.get("hitl.dlq.reason")) and h.get("hitl.source.topic") == source_topic.encode() \
        and h.get("hitl.source.offset", b"").isdigit()  # fmt: skip


async def check(
    settings: Settings, bootstrap: str, redis_url: str, *, feed: Feed, reviewer: Reviewer,
    audit_key: bytes,
) -> Findings:  # fmt: skip
    t = settings.topics
    f = Findings()
    read = {name: await read_topic(bootstrap, getattr(t, name))
            for name in ("delivered", "blocked", "deadletter", "holds", "audit")}  # fmt: skip
    for name in ("delivered", "blocked", "deadletter", "holds", "audit", "review_tasks"):
        raw = await read_topic(bootstrap, getattr(t, name), committed=False)
        committed = read[name] if name in read else await read_topic(bootstrap, t.review_tasks)
        f.aborted_records += len(raw) - len(committed)
    valid = {k for k, s in feed.sent.items() if s.valid}
    bad = {k for k, s in feed.sent.items() if not s.valid}
    f.produced, f.malformed = len(valid), len(bad)
    delivered = Counter(r.key for r in read["delivered"])
    blocked = Counter(r.key for r in read["blocked"])
    dead = {r.key: r for r in read["deadletter"]}
    ever, pending, open_any = _latest_holds(read["holds"])
    f.held, f.pending, f.pending_ids = len(ever), len(pending), pending
    f.closed_at_ms = {r.key: r.timestamp_ms for r in read["holds"] if r.value is None}
    outcomes = delivered + blocked + Counter(dead.keys())
    f.lost = sorted(k for k in valid if k not in outcomes and k not in pending)
    f.duplicated = sorted(k for k, n in outcomes.items() if n > 1)
    f.held_lost = sorted(k for k in ever if k not in delivered and k not in blocked
                         and k not in pending)  # fmt: skip
    f.unauthorized_applied = sorted(
        k for k in ever if k in delivered and k not in reviewer.approved
    )
    f.malformed_unaccounted = sorted(
        k for k in bad if k not in dead or not _malformed_ok(dead[k], t.outputs)
    )
    audit = sorted(read["audit"], key=lambda r: (r.partition, r.offset))
    f.audit_events = len(audit)
    checked = verify([(r.partition, r.offset, r.value or b"") for r in audit], {"k1": audit_key})
    f.audit_problems = [str(p) for p in checked.problems]
    f.audit_verified = not checked.problems and bool(audit)
    events = [orjson.loads(r.value) for r in audit if r.value]
    f.refusals = dict(Counter(str(e.get("refusal")) for e in events
                              if e.get("type") == "decision_refused"))  # fmt: skip
    indexed = await redis_pending(redis_url, settings.redis.key_prefix)
    f.index_missing = sorted(open_any - indexed)
    f.index_extra = sorted(indexed - open_any)
    return f


async def _records_after(bootstrap: str, offsets: dict[Any, Any], parts: list[Any]) -> bool:
    """Whether any record follows the committed offsets (a transaction's closing marker
    after the last record takes an offset but is no record: a group never commits past it)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    try:
        consumer.assign(parts)
        for tp in parts:
            consumer.seek(tp, offsets[tp].offset if tp in offsets else 0)
        batch = await consumer.getmany(timeout_ms=2_000)
        return any(batch.values())
    finally:
        await consumer.stop()


async def wait_drained(settings: Settings, bootstrap: str, timeout_s: float) -> bool:
    """Until the group has committed every input and decision offset."""
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415

    t = settings.topics
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        try:
            await admin.start()
            await consumer.start()
            offsets = await admin.list_consumer_group_offsets(settings.kafka.group_id)
            parts = [TopicPartition(topic, p) for topic in (t.outputs, t.review_decisions)
                     for p in range(t.partitions)]  # fmt: skip
            ends = await consumer.end_offsets(parts)
            behind = [tp for tp in parts
                      if ends[tp] > (offsets[tp].offset if tp in offsets else 0)]  # fmt: skip
            if not behind or not await _records_after(bootstrap, offsets, behind):
                return True
        except Exception:  # noqa: BLE001, S110 - a broker may be down: try again
            pass
        finally:
            await consumer.stop()
            await admin.close()
        await asyncio.sleep(1)
    return False
