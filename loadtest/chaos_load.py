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

from hitl_gateway.review.signing import Signer, new_key, tool_signer
from records import MALFORMED, make_record

logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
SERVICE = "service-bot"  # a reviewer in every pool that also produces some outputs (S10)
VALIDITY_MS = 300_000  # how long a signed decision stays valid (the gateways' default)
Headers = list[tuple[str, bytes]]
Outgoing = tuple[bytes, Headers]  # a decision record's value and headers


def signed(signer: Signer, value: bytes) -> Headers:
    return signer.headers(value, expires_ms=int(time.time() * 1000) + VALIDITY_MS)


def stranger() -> Signer:
    """A well-formed key the gateways do not trust (S10's forgeries)."""
    secret, _ = new_key("chaos-reviewer", "ed25519")  # the trusted key's id, not its key
    return tool_signer("chaos-reviewer", "ed25519", secret)


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
    reviewer, over the decisions topic, each decision signed with the review tool's key.
    ``withhold``: items it never decides (S10's targets).

    ``malicious`` (S10): a third of the held items get only decisions that must be refused,
    signed or not: approvals by a reviewer of another pool, for content the reviewer did not
    see and by the producing service (refused by the rules); an approval signed with a key the
    gateways do not trust (under the trusted key's id), one signed as a reject and altered to
    an approval, and an unsigned one (refused for the signature); and one legitimate decision
    in ``REPLAY_EVERY`` is published a second time, headers and all (refused as replayed)."""

    bootstrap: str
    tasks_topic: str
    decisions_topic: str
    partitions: int
    grants: dict[str, list[str]]
    signer: Signer
    malicious: bool = False
    withhold: set[str] = field(default_factory=set)
    malicious_sent: int = 0  # refused by the rules (signed with the trusted key)
    forged_sent: int = 0  # refused for their signature: untrusted key, altered, replayed
    unsigned_sent: int = 0
    collect: bool = False  # S9: keep blocking tasks for the storm instead of deciding them
    collected: dict[str, dict[str, Any]] = field(default_factory=dict)
    approved: set[str] = field(default_factory=set)  # items it voted approve or edit on
    rejected: set[str] = field(default_factory=set)
    voted: dict[str, set[str]] = field(default_factory=dict)
    decisions: int = 0
    legitimate: int = 0
    last_task_at: float = field(default_factory=time.monotonic)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    _stranger: Signer = field(default_factory=stranger)
    _replays: list[Outgoing] = field(default_factory=list)

    REPLAY_EVERY = 10

    def _decisions(self, task: dict[str, Any]) -> list[Outgoing]:
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
            value = orjson.dumps({
                "decision_id": uuid.uuid4().hex, "item_id": item, "reviewer": who,
                "verdict": verdict, "content_hash": task["content_hash"],
                "edited_output": {"text": "edited by the reviewer"} if verdict == "edit" else None,
                "reason": "chaos reviewer" if verdict == "reject" else None,
                "grade": "B" if task.get("blind") else None,
            })  # fmt: skip
            out.append((value, signed(self.signer, value)))
            self.legitimate += 1
            if self.malicious and self.legitimate % self.REPLAY_EVERY == 0:
                self._replays.append(out[-1])  # published again after this one (run)
        return out

    def _malicious(self, task: dict[str, Any], item: str, pool: str) -> list[Outgoing]:
        other = next(p for p in self.grants if p not in (pool, "*"))
        record = task.get("record") or {}
        producer = (
            (record.get("metadata") or {}).get("service") if isinstance(record, dict) else None
        )
        grade = "A" if task.get("blind") else None

        def approval(who: str, digest: str, verdict: str = "approve") -> bytes:
            reason = "x" if verdict == "reject" else None
            return orjson.dumps({"decision_id": uuid.uuid4().hex, "item_id": item,
                                 "reviewer": who, "verdict": verdict, "content_hash": digest,
                                 "grade": grade, "reason": reason})  # fmt: skip

        by_rules = [approval(self.grants[other][0], task["content_hash"]),
                    approval(self.grants[pool][0], "sha256:" + "0" * 64)]  # fmt: skip
        if producer == SERVICE:
            by_rules.append(approval(SERVICE, task["content_hash"]))
        out = [(v, signed(self.signer, v)) for v in by_rules]
        self.malicious_sent += len(by_rules)
        reviewer, digest = self.grants[pool][0], task["content_hash"]
        forged = approval(reviewer, digest)
        reject = approval(reviewer, digest, "reject")
        altered = reject.replace(b'"verdict":"reject"', b'"verdict":"approve"')
        assert altered != reject
        out += [(forged, signed(self._stranger, forged)), (altered, signed(self.signer, reject))]
        self.forged_sent += 2
        out.append((approval(reviewer, digest), []))
        self.unsigned_sent += 1
        return out

    async def run(self) -> None:
        consumer = await reader(self.bootstrap, self.tasks_topic, self.partitions)
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, enable_idempotence=True)
        await producer.start()

        async def send(value: bytes, headers: Headers) -> None:
            key = orjson.loads(value)["item_id"].encode()
            await producer.send(self.decisions_topic, value, key=key, headers=headers)

        try:
            while not self.stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=500)
                tasks = [orjson.loads(r.value) for rs in batch.values() for r in rs]
                if tasks:
                    self.last_task_at = time.monotonic()
                replays, self._replays = self._replays, []
                for value, headers in replays:  # their originals went out with an earlier flush
                    await send(value, headers)
                    self.forged_sent += 1
                for task in tasks:
                    for value, headers in self._decisions(task):
                        await send(value, headers)
                        self.decisions += 1
                await producer.flush()
        finally:
            await consumer.stop()
            await producer.stop()


async def send_decisions(
    bootstrap: str, topic: str, decisions: list[dict[str, Any]], signer: Signer
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for d in decisions:
            value = orjson.dumps(d)
            await producer.send(topic, value, key=d["item_id"].encode(),
                                headers=signed(signer, value))  # fmt: skip
        await producer.flush()
    finally:
        await producer.stop()
