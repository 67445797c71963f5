"""SIGKILL two gateway instances at random moments while records are being held and while
decisions are being applied (12 kills across both phases). Afterwards: no held item lost,
none delivered twice, none delivered without an approval, and the keyed audit trail verifies
(sequence numbers and checkpoints carried on across every takeover)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
from collections import Counter
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from hitl_gateway.admin import ensure_topics
from hitl_gateway.audit_verify import verify
from hitl_gateway.review.auth import new_token
from hitl_gateway.settings import (
    AuditSettings,
    KafkaSettings,
    PolicySettings,
    ReviewSettings,
    Settings,
)

from .kafka_io import BOOTSTRAP, committed_offsets, fresh_settings, produce, read_all, wait_until
from .processes import GatewayProcess

HELD = 2_400
FREE = 600
KILLS_PER_PHASE = 6
UNAPPROVED_EVERY = 10  # every 10th held item never gets a decision
AUDIT_KEY = b"a" * 32


def _configs(root: Path) -> Settings:
    (root / "policies").mkdir()
    (root / "pools.yaml").write_text(
        "pools:\n  - {name: p1, cost_per_hour_usd: 50, cases_per_hour: 30, reviewers: 2,"
        " hours_per_week: 40}\n"
    )
    (root / "policies" / "held.yaml").write_text(
        "domain: held\nmandatory_review: {pool: p1, sla: 1d, escalation: [{after: 1d, pool: p1}]}\n"
    )
    (root / "policies" / "free.yaml").write_text("domain: free\naudit: {level: reviews}\n")
    _, digest = new_token()
    (root / "reviewers.yaml").write_text(
        f"reviewers:\n  - {{id: r1, token_sha256: {digest}, pools: [p1]}}\n"
    )
    (root / "audit-keys.yaml").write_text(f"k1: {base64.b64encode(AUDIT_KEY).decode()}\n")
    base = fresh_settings(policy_dir=root / "policies")
    kafka = base.kafka.model_dump()
    kafka.update(session_timeout_ms=3_000, max_batch_records=200)
    return base.model_copy(
        update={
            "kafka": KafkaSettings(**kafka),
            "policy": PolicySettings(dir=root / "policies", reload_interval_s=0),
            "review": ReviewSettings(reviewers_file=root / "reviewers.yaml"),
            "audit": AuditSettings(
                keys_file=root / "audit-keys.yaml",
                active_key_id="k1",
                checkpoint_every=100,
                checkpoint_interval_s=1,
            ),
        }
    )


def _value(item_id: str, domain: str) -> bytes:
    return orjson.dumps({"id": item_id, "domain": domain, "output": {"text": item_id * 3}})


async def _kill_randomly(
    gateways: list[GatewayProcess], rng: random.Random, kills: int, log: list[str]
) -> None:
    for _ in range(kills):
        await asyncio.sleep(rng.uniform(0.8, 2.5))
        victim = rng.choice(gateways)
        victim.kill()
        log.append(victim.log_path.name)
        victim.start()


async def _feed_decisions(topic: str, items: list[str], values: dict[str, bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, enable_idempotence=True)
    await producer.start()
    try:
        for i, item in enumerate(items):
            decision = {
                "decision_id": f"d-{item}",
                "item_id": item,
                "reviewer": "r1",
                "verdict": "approve",
                "content_hash": "sha256:" + hashlib.sha256(values[item]).hexdigest(),
            }
            await producer.send(topic, orjson.dumps(decision), key=item.encode())
            if i % 5 == 0:  # a second approval for the same item: must not deliver twice
                again = {**decision, "decision_id": f"again-{item}"}
                await producer.send(topic, orjson.dumps(again), key=item.encode())
            if i % 100 == 99:
                await producer.flush()
                await asyncio.sleep(0.15)
        await producer.flush()
    finally:
        await producer.stop()


async def test_kills_while_holding_and_deciding(tmp_path: Path) -> None:
    rng = random.Random(4)
    settings = _configs(tmp_path)
    await ensure_topics(settings)
    t = settings.topics
    held = [f"h{i}" for i in range(HELD)]
    values = {item: _value(item, "held") for item in held}
    records = [(item.encode(), values[item]) for item in held]
    records += [(f"f{i}".encode(), _value(f"f{i}", "free")) for i in range(FREE)]
    rng.shuffle(records)

    async def committed(topic: str) -> int:
        return sum((await committed_offsets(settings, topic)).values())

    gateways = [GatewayProcess(settings, tmp_path, f"gw{i}") for i in range(2)]
    kills: list[str] = []
    try:
        for gateway in gateways:
            gateway.start()
        # Phase 1: records arrive in a steady stream while instances are killed.
        feeding = asyncio.create_task(_feed_records(t.outputs, records))
        await _kill_randomly(gateways, rng, KILLS_PER_PHASE, kills)
        await feeding

        async def all_routed() -> bool:
            return await committed(t.outputs) >= len(records)

        await wait_until(all_routed, timeout_s=180, interval_s=0.5)

        # Phase 2: decisions arrive while instances are killed.
        approved = [item for i, item in enumerate(held) if i % UNAPPROVED_EVERY]
        feeding = asyncio.create_task(_feed_decisions(t.review_decisions, approved, values))
        await _kill_randomly(gateways, rng, KILLS_PER_PHASE, kills)
        await feeding
        total_decisions = len(approved) + len(range(0, len(approved), 5))

        async def all_decided() -> bool:
            return await committed(t.review_decisions) >= total_decisions

        await wait_until(all_decided, timeout_s=180, interval_s=0.5)
    finally:
        for gateway in gateways:
            gateway.terminate()
        for gateway in gateways:
            if gateway.proc is not None:
                gateway.wait(60)

    assert len(kills) == 2 * KILLS_PER_PHASE
    delivered = Counter(r.key.decode() for r in await read_all(t.delivered, timeout_s=60))
    twice = {k: n for k, n in delivered.items() if n > 1}
    assert not twice, f"delivered twice: {list(twice)[:5]}"
    unapproved = set(held) - set(approved)
    assert not unapproved & set(delivered), "delivered without an approval"
    assert set(approved) <= set(delivered), "an approved item was lost"
    assert {f"f{i}" for i in range(FREE)} <= set(delivered)
    latest: dict[str, bytes | None] = {}
    for record in await read_all(t.holds, timeout_s=60):
        latest[record.key.decode()] = record.value
    still_held = {k for k, v in latest.items() if v is not None}
    assert still_held == unapproved, "a held item was lost (or not closed)"
    records = sorted(await read_all(t.audit, timeout_s=60), key=lambda r: (r.partition, r.offset))
    trail = [orjson.loads(r.value) for r in records]
    refused = Counter(e.get("refusal") for e in trail if e["type"] == "decision_refused")
    assert refused["already_closed"] == len(range(0, len(approved), 5))
    checked = verify([(r.partition, r.offset, r.value) for r in records], {"k1": AUDIT_KEY})
    assert checked.problems == [], [str(p) for p in checked.problems[:5]]
    assert all(c.checkpoints > 5 and c.first_seq == 0 for c in checked.chains.values())


async def _feed_records(topic: str, records: list[tuple[bytes, bytes]]) -> None:
    for start in range(0, len(records), 150):
        await produce(topic, records[start : start + 150])
        await asyncio.sleep(0.1)
