"""The fault matrix's load and its witnesses: a steady producer of unique ids over the
realistic domain mix, a reviewer deciding held items over the decisions topic, and a
read_committed watcher of the delivered topic that notes when each id first appears.

All three talk to the brokers directly (not through the fault proxy): the faults are the
gateways', the witnesses must see through them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from records import MALFORMED, make_record

logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
SERVICE = "service-bot"  # a reviewer in every pool that also produces some outputs (S10)


@dataclass
class Sent:
    partition: int
    at: float  # wall clock, seconds
    valid: bool


@dataclass
class Feed:
    """Records at ``rate_per_s``, every ``malformed_every``-th one malformed (0: none); a
    ``self_share`` of them carry a reviewer's id as their producing service."""

    bootstrap: str
    topic: str
    run_id: str
    rate_per_s: float
    malformed_every: int = 0
    service: str | None = None  # the producing service of every 7th record
    sent: dict[str, Sent] = field(default_factory=dict)
    values: dict[str, bytes] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    seq: int = 0

    def _next(self, rng: random.Random) -> tuple[str, bytes | None, bool]:
        self.seq += 1
        if self.malformed_every and self.seq % self.malformed_every == 0:
            return f"{self.run_id}-bad-{self.seq}", MALFORMED[self.seq % len(MALFORMED)], False
        record = make_record(rng, self.run_id, self.seq, payload_bytes=600)
        assert record.value is not None
        if self.service and self.seq % 7 == 0:
            body = orjson.loads(record.value)
            body["metadata"]["service"] = self.service
            return body["id"], orjson.dumps(body), True
        return record.key.decode() if record.key else "", record.value, True

    async def run(self) -> None:
        rng = random.Random(self.run_id)
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, enable_idempotence=True, linger_ms=5
        )
        await producer.start()
        tick = 0.05
        try:
            while not self.stop.is_set():
                began = time.monotonic()
                pending = []
                for _ in range(max(1, round(self.rate_per_s * tick))):
                    key, value, valid = self._next(rng)
                    if valid and value is not None:
                        self.values[key] = value
                    future = await producer.send(self.topic, value, key=key.encode())
                    pending.append((key, valid, future))
                for key, valid, future in pending:
                    meta = await future
                    self.sent[key] = Sent(meta.partition, time.time(), valid)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.stop.wait(), max(0.0, tick - (time.monotonic() - began))
                    )
        finally:
            await producer.stop()


@dataclass
class Watcher:
    """First sight of each id on the delivered topic (read_committed, wall clock)."""

    bootstrap: str
    topic: str
    partitions: int
    seen: dict[str, float] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        consumer = await reader(self.bootstrap, self.topic, self.partitions)
        try:
            while not self.stop.is_set():
                batch = await consumer.getmany(timeout_ms=100, max_records=2_000)
                now = time.time()
                for records in batch.values():
                    for r in records:
                        self.seen.setdefault(r.key.decode(), now)
        finally:
            await consumer.stop()


async def reader(bootstrap: str, topic: str, partitions: int) -> AIOKafkaConsumer:
    """A read_committed consumer of every partition of ``topic``, from the start. Assigned,
    not subscribed: a topic created a moment ago may not be in the first metadata yet, and a
    subscription would wait for the next refresh (minutes)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, isolation_level="read_committed",
        auto_offset_reset="earliest", fetch_max_wait_ms=50,
    )  # fmt: skip
    await consumer.start()
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    return consumer


def verdict_for(item_id: str, reviewers: int) -> str:
    """A fixed verdict per item: mostly approve, some edits (single reviewer) and rejects."""
    n = int(hashlib.sha256(item_id.encode()).hexdigest()[:4], 16) % 100
    if n < 8:
        return "reject"
    if n < 20 and reviewers == 1:
        return "edit"
    return "approve"


@dataclass
class Reviewer:
    """Decides every blocking review task as reviewers of its pool, one vote per required
    reviewer, over the decisions topic. ``withhold``: items it never decides (S10's targets)."""

    bootstrap: str
    tasks_topic: str
    decisions_topic: str
    partitions: int
    grants: dict[str, list[str]]
    malicious: bool = False  # S10: a share of items gets only decisions that must be refused
    withhold: set[str] = field(default_factory=set)
    malicious_sent: int = 0
    collect: bool = False  # S9: keep blocking tasks for the storm instead of deciding them
    collected: dict[str, dict[str, Any]] = field(default_factory=dict)
    approved: set[str] = field(default_factory=set)  # items it voted approve or edit on
    rejected: set[str] = field(default_factory=set)
    voted: dict[str, set[str]] = field(default_factory=dict)
    decisions: int = 0
    last_task_at: float = field(default_factory=time.monotonic)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def _decisions(self, task: dict[str, Any]) -> list[dict[str, Any]]:
        item = task["item_id"]
        if not task.get("blocking", True) or item in self.withhold:
            return []
        pool = task["pool"]
        if self.collect:
            self.collected.setdefault(item, task)
            return []
        if self.malicious and int(hashlib.sha256(item.encode()).hexdigest()[:4], 16) % 3 == 0:
            self.withhold.add(item)
            return self._malicious(task, item, pool)
        done = self.voted.setdefault(item, set())
        wanted = max(1, int(task.get("reviewers") or 1))
        verdict = verdict_for(item, wanted)
        out = []
        for who in [r for r in self.grants.get(pool, []) if r not in done][:wanted]:
            done.add(who)
            (self.rejected if verdict == "reject" else self.approved).add(item)
            out.append({
                "decision_id": uuid.uuid4().hex, "item_id": item, "reviewer": who,
                "verdict": verdict, "content_hash": task["content_hash"],
                "edited_output": {"text": "edited by the reviewer"} if verdict == "edit" else None,
                "reason": "chaos reviewer" if verdict == "reject" else None,
                "grade": "B" if task.get("blind") else None,
            })  # fmt: skip
        return out

    def _malicious(self, task: dict[str, Any], item: str, pool: str) -> list[dict[str, Any]]:
        """Approvals that must all be refused: by a reviewer of another pool, by the service
        that produced the output (granted the pool), and for content the reviewer did not see."""
        other = next(p for p in self.grants if p not in (pool, "*"))
        record = task.get("record") or {}
        producer = (
            (record.get("metadata") or {}).get("service") if isinstance(record, dict) else None
        )
        attempts = [(self.grants[other][0], task["content_hash"]),
                    (self.grants[pool][0], "sha256:" + "0" * 64)]  # fmt: skip
        if producer == SERVICE:
            attempts.append((SERVICE, task["content_hash"]))
        self.malicious_sent += len(attempts)
        grade = "A" if task.get("blind") else None
        return [{"decision_id": uuid.uuid4().hex, "item_id": item, "reviewer": who,
                 "verdict": "approve", "content_hash": digest, "grade": grade}
                for who, digest in attempts]  # fmt: skip

    async def run(self) -> None:
        consumer = await reader(self.bootstrap, self.tasks_topic, self.partitions)
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, enable_idempotence=True)
        await producer.start()
        try:
            while not self.stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=500)
                tasks = [orjson.loads(r.value) for rs in batch.values() for r in rs]
                if tasks:
                    self.last_task_at = time.monotonic()
                for task in tasks:
                    for d in self._decisions(task):
                        await producer.send(
                            self.decisions_topic, orjson.dumps(d), key=d["item_id"].encode()
                        )
                        self.decisions += 1
                await producer.flush()
        finally:
            await consumer.stop()
            await producer.stop()


async def send_decisions(bootstrap: str, topic: str, decisions: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for d in decisions:
            await producer.send(topic, orjson.dumps(d), key=d["item_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()
