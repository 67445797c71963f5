"""Redis loses the hold index while the gateway runs (FLUSHALL, or a replica promoted
without it): the fault matrix's S6 found decisions for held items refused as unknown, and
the items missing from every queue, until something else made the partition be retaken.
Now the next batch finds the index gone, the partition is retaken (rebuilding its index
from the holds topic) and the decision is applied."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from hitl_gateway.settings import ReviewSettings, Settings

from .gateways import serving, write_reviewers
from .kafka_io import CONFIGS, REDIS_URL, fresh_settings, produce, read_all, wait_until


def _settings(tmp_path: Path, **kafka: int) -> tuple[Settings, dict[str, str]]:
    """Settings with one reviewer (``ana``, clinicians), and the headers that sign her in."""
    tokens = write_reviewers(tmp_path / "reviewers.yaml", {"ana": ["clinicians"]})
    settings = fresh_settings(policy_dir=CONFIGS / "policies")
    settings = settings.model_copy(
        update={"review": ReviewSettings(reviewers_file=tmp_path / "reviewers.yaml"),
                "kafka": settings.kafka.model_copy(update=kafka)}
    )  # fmt: skip
    return settings, {"Authorization": f"Bearer {tokens['ana']}"}


async def _hold_w1(settings: Settings, http: Any, headers: dict[str, str]) -> str:
    """Item w1 held for review: its content hash."""
    body = {"id": "w1", "domain": "clinical-summaries", "output": {"text": "held"}}
    await produce(settings.topics.outputs, [(b"w1", orjson.dumps(body))])

    async def held() -> bool:
        return (await http.get("/v1/items/w1", headers=headers)).status_code == 200

    await wait_until(held, timeout_s=30)
    return str((await http.get("/v1/items/w1", headers=headers)).json()["content_hash"])


async def _wipe(settings: Settings) -> None:
    """Every key of this gateway: what FLUSHALL does to it."""
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{settings.redis.key_prefix}*")]
        await client.delete(*keys)
    finally:
        await client.aclose()


async def _approve_w1(settings: Settings, content_hash: str) -> None:
    """Ana approves w1 on the decisions topic; the decision is audited and not refused."""
    t = settings.topics
    decision = {"decision_id": "d-w1", "item_id": "w1", "reviewer": "ana",
                "verdict": "approve", "content_hash": content_hash}  # fmt: skip
    await produce(t.review_decisions, [(b"w1", orjson.dumps(decision))])

    async def audited() -> bool:
        trail = [orjson.loads(r.value) for r in await read_all(t.audit, timeout_s=5)]
        return any(e.get("decision_id") == "d-w1" for e in trail)

    await wait_until(audited, timeout_s=30)
    trail = [orjson.loads(r.value) for r in await read_all(t.audit, timeout_s=5)]
    refused = [e.get("refusal") for e in trail if e.get("type") == "decision_refused"]
    assert refused == [], refused


async def test_a_decision_after_the_index_was_wiped_is_applied(tmp_path: Path) -> None:
    settings, headers = _settings(tmp_path)
    t = settings.topics
    async with serving(settings) as (_, http):
        content_hash = await _hold_w1(settings, http, headers)
        await _wipe(settings)
        await _approve_w1(settings, content_hash)

        async def delivered() -> bool:
            return [r.key for r in await read_all(t.delivered, timeout_s=5)] == [b"w1"]

        await wait_until(delivered, timeout_s=30)
        # The index is back: the item is closed, not missing.
        assert (await http.get("/v1/items/w1", headers=headers)).status_code == 404


async def test_a_wipe_while_a_transaction_is_open_rewinds_it(tmp_path: Path) -> None:
    """The transaction that routed a record before the wipe is still open when the decision
    arrives (a 3 s commit interval): the decision's chunk finds the index gone, the whole
    transaction aborts, and the partition is retaken before the decision is applied."""
    settings, headers = _settings(tmp_path, commit_interval_ms=3_000)
    t = settings.topics
    async with serving(settings) as (_, http):
        content_hash = await _hold_w1(settings, http, headers)
        await asyncio.sleep(3.5)  # the hold's transaction has long committed
        passing = {"id": "p1", "domain": "support-chat", "confidence": 0.95, "language": "en",
                   "output": {"text": "passes"}}  # fmt: skip
        await produce(t.outputs, [(b"w1", orjson.dumps(passing))])  # the same partition
        await asyncio.sleep(0.5)  # routed and sent; its transaction waits for more
        await _wipe(settings)
        await _approve_w1(settings, content_hash)

        async def delivered() -> bool:
            keys = sorted(orjson.loads(r.value)["id"] for r in await read_all(t.delivered))
            return keys == ["p1", "w1"]

        await wait_until(delivered, timeout_s=30)
        assert (await http.get("/v1/items/w1", headers=headers)).status_code == 404
