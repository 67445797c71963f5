"""The Redis wrappers' Lua scripts against the real server: what each batch argument
becomes in Redis (budget snapshots across the script's 1,000-id chunks, index upserts with
millisecond scores, pool moves and removals)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from hitl_gateway.budgets import RedisBudgets
from hitl_gateway.errors import RedisUnavailable
from hitl_gateway.holds import HoldIndex
from hitl_gateway.index_entries import IndexedHold
from hitl_gateway.models import HoldMeta
from hitl_gateway.policy.budget import Claim
from hitl_gateway.review.state import ClosedBy

from .kafka_io import REDIS_URL, fresh_settings

pytestmark = pytest.mark.integration


async def test_a_snapshot_reads_fill_and_members_across_chunks() -> None:
    budgets = RedisBudgets(fresh_settings().redis)
    try:
        # 1,000 slots taken in "a" (by every third id of 3,000 candidates, the last of each
        # 1,000 among them: the script asks SMISMEMBER 1,000 ids at a time), 2 in "b"; "c"
        # is empty.
        taken = [f"id-{n}" for n in range(0, 3_000, 3)]
        granted = await budgets.claim([(i, [Claim("a", 10_000, None)]) for i in taken])
        assert all(granted)
        assert await budgets.claim([(i, [Claim("b", 5, 60)]) for i in ("x", "é/ü")]) == [
            True,
            True,
        ]
        candidates = {
            "a": [f"id-{n}" for n in range(3_000)],
            "b": ["é/ü", "y"],
            "c": ["z"],
        }
        ledger = await budgets.snapshot(candidates)
    finally:
        await budgets.stop()
    assert ledger.used("a") == 1_000
    assert [i for i in candidates["a"] if ledger.claimed("a", i)] == taken
    assert ledger.used("b") == 2
    assert ledger.claimed("b", "é/ü")
    assert not ledger.claimed("b", "y")
    assert ledger.used("c") == 0
    assert not ledger.claimed("c", "z")


async def test_claims_stop_at_the_cap_and_a_replay_keeps_its_slot() -> None:
    budgets = RedisBudgets(fresh_settings().redis)
    try:
        cap = [Claim("q", 2, 60)]
        assert await budgets.claim([("r1", cap), ("r2", cap), ("r3", cap)]) == [
            True,
            True,
            False,
        ]
        assert await budgets.claim([("r2", cap)]) == [True]  # a replay finds its slot
    finally:
        await budgets.stop()


def _hold(
    item: str,
    pool: str,
    *,
    key: bytes | None,
    partition: int,
    domain: str = "clinical-summaries",
    deadline_ms: int = 1_795_576_317_737,
    held_at_ms: int = 1_795_576_017_001,
    uncertainty: float | None = None,
) -> IndexedHold:
    meta = {
        "uncertainty": uncertainty,
        "item_id": item,
        "pool": pool,
        "domain": domain,
        "sla_deadline_ms": deadline_ms,
        "held_at_ms": held_at_ms,
        "next_check_ms": 1_795_576_117_123,
        "reviewers": 1,
        "content_hash": "sha256:" + "c" * 64,
        "source": {"topic": "outputs", "partition": partition, "offset": 41},
    }
    return IndexedHold(
        meta=HoldMeta.of(meta),
        value=b'{"id":"' + item.encode() + b'"}',
        key=key,
        headers=[("h", b"\x00\xff")],
        partition=partition,
        meta_json=orjson.dumps(meta),
    )


async def test_index_upserts_keep_millisecond_scores_and_follow_pool_moves() -> None:
    settings = fresh_settings().redis
    index = HoldIndex(settings)
    p = settings.key_prefix
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await index.apply(
            [
                _hold("i1", "nurses", key=b"k1", partition=2),
                _hold("i2", "nurses", key=None, partition=0),
            ],
            [],
            {("i1", "ana", "d0"): {"status": "recorded"}},
            {("holds", 2): 7},
        )
        assert await client.zscore(f"{p}queue:nurses", "i1") == 1_795_576_317_737
        assert await client.zscore(f"{p}age:nurses", "i1") == 1_795_576_017_001
        assert await client.zscore(f"{p}sla:2", "i1") == 1_795_576_117_123
        assert await client.hget(f"{p}hold:i1", "partition") == b"2"
        assert await index.applied_offset("holds", 2) == 7
        assert await index.result("i1", "ana", "d0") == {"status": "recorded"}
        # The hold restores its id's claim (ids.py) for an index rebuilt after Redis lost it.
        claim = await client.get(f"{p}id:i1")
        assert claim == b"sha256:" + b"c" * 64 + b"|outputs:2:41"
        assert await index.result("i2", "ana", "d0") is None  # scoped to its item
        assert await index.result("i1", "bob", "d0") is None  # and to its reviewer
        first = await index.get("i1")
        assert first is not None
        assert first.key == b"k1"
        assert first.headers == [("h", b"\x00\xff")]
        assert first.meta.pool == "nurses"
        second = await index.get("i2")
        assert second is not None
        assert second.key is None

        # i1 moves to another pool (adjudication); i2 is closed by a decision.
        await index.apply(
            [_hold("i1", "doctors", key=b"k1", partition=2)], [("i2", "d2\0ana", 0)], {}, {}
        )
        assert await client.zscore(f"{p}queue:nurses", "i1") is None
        assert await client.zscore(f"{p}queue:doctors", "i1") == 1_795_576_317_737
        assert await index.get("i2") is None
        assert await index.closed_by("i2") == ClosedBy("d2", "ana")
        assert await client.zscore(f"{p}sla:0", "i2") is None
        assert await index.queue("nurses") == (0, [])
    finally:
        await index.stop()
        await client.aclose()


async def test_queue_pages_among_the_granted_domains_only() -> None:
    settings = fresh_settings().redis
    index = HoldIndex(settings)
    # Twelve items of three domains in one pool; deadlines interleave the domains, and the
    # hold times run the other way round.
    domains = ["a:x", "b", "c"]  # a domain may hold the key separator
    holds = [
        _hold(f"i{n:02d}", "nurses", key=None, partition=0, domain=domains[n % 3],
              deadline_ms=1_000 + n, held_at_ms=5_000 - n)
        for n in range(12)
    ]  # fmt: skip

    async def ids(**kwargs: Any) -> tuple[int, list[str]]:
        total, metas = await index.queue("nurses", **kwargs)
        return total, [m.item_id for m in metas]

    try:
        await index.apply(holds, [], {}, {})
        assert await ids(limit=3) == (12, ["i00", "i01", "i02"])
        assert await ids(domains=["b"], limit=2) == (4, ["i01", "i04"])
        assert await ids(domains=["b"], offset=2, limit=5) == (4, ["i07", "i10"])
        assert await ids(domains=["c", "a:x"], offset=1, limit=4) == (
            8,
            ["i02", "i03", "i05", "i06"],
        )
        assert await ids(domains=["c", "a:x"], order="age", limit=3) == (8, ["i11", "i09", "i08"])
        assert await ids(domains=["c", "a:x"], offset=8) == (8, [])
        assert await ids(domains=["nobody"]) == (0, [])

        # A pool move and a removal leave the domain's pages too.
        await index.apply(
            [_hold("i01", "doctors", key=None, partition=0, domain="b", deadline_ms=1_001)],
            [("i04", "d4", 0)],
            {},
            {},
        )
        assert await ids(domains=["b"]) == (2, ["i07", "i10"])
        total, metas = await index.queue("doctors", domains=["b"])
        assert (total, [m.item_id for m in metas]) == (1, ["i01"])
    finally:
        await index.stop()


async def test_the_uncertainty_queue_lists_the_most_uncertain_first_then_by_deadline() -> None:
    settings = fresh_settings().redis
    index = HoldIndex(settings)
    # Real deadlines (ms since 1970, this century): the score keeps them exact.
    base = 1_795_576_317_737
    spec = [("u30", 0.3, base + 5), ("u90", 0.9, base + 9), ("none", None, base),
            ("u90b", 0.9, base + 1), ("u0", 0.0, base + 2), ("u1", 1.0, base + 7),
            ("other", 0.5, base + 3)]  # fmt: skip
    holds = [
        _hold(i, "annotators", key=None, partition=0, domain="b" if i == "other" else "a",
              deadline_ms=d, uncertainty=u)
        for i, u, d in spec
    ]  # fmt: skip

    async def ids(**kwargs: Any) -> list[str]:
        _, metas = await index.queue("annotators", order="uncertainty", **kwargs)
        return [m.item_id for m in metas]

    try:
        await index.apply(holds, [], {}, {})
        # Ties in uncertainty by deadline; no uncertainty counts as none (0), by deadline.
        assert await ids() == ["u1", "u90b", "u90", "other", "u30", "none", "u0"]
        assert await ids(domains=["a"], limit=3) == ["u1", "u90b", "u90"]
        assert await ids(domains=["a", "b"], offset=3, limit=2) == ["other", "u30"]
        # A removal and a pool move leave the uncertainty queues too.
        await index.apply([_hold("u1", "elsewhere", key=None, partition=0, domain="a",
                                 uncertainty=1.0)], [("u90b", "d1", 0)], {}, {})  # fmt: skip
        assert await ids(domains=["a"]) == ["u90", "u30", "none", "u0"]
        with pytest.raises(ValueError, match="order must be one of deadline, age, uncertainty"):
            await index.queue("annotators", order="random")
    finally:
        await index.stop()


async def test_a_former_owners_late_update_does_not_bring_a_closed_hold_back() -> None:
    """The fault matrix's zombie (S3): an instance committed a hold at holds offset 1456 and
    was paused before its index update; the next owner restored the index to 1458 and closed
    the hold (tombstone at 1458, applied 1460); then the paused instance woke and sent its
    update. It must change nothing."""
    settings = fresh_settings().redis
    index = HoldIndex(settings)
    try:
        await index.apply([_hold("z1", "nurses", key=b"z1", partition=1)], [], {},
                          {("holds", 1): 1458})  # fmt: skip
        await index.apply([], [("z1", "d1\0ana", 1)], {}, {("holds", 1): 1460})
        with capture_logs() as logs:
            await index.apply([_hold("z1", "nurses", key=b"z1", partition=1)], [], {},
                              {("holds", 1): 1457})  # fmt: skip
        assert await index.get("z1") is None
        assert await index.queue("nurses") == (0, [])
        assert await index.applied_offset("holds", 1) == 1460
        assert [e["event"] for e in logs] == ["hold_index_update_stale"]
        # The owner's own next update (offsets ahead) applies as before.
        await index.apply([_hold("z2", "nurses", key=b"z2", partition=1)], [], {},
                          {("holds", 1): 1462})  # fmt: skip
        assert await index.get("z2") is not None
    finally:
        await index.stop()


async def test_an_update_after_a_commit_refuses_an_index_that_is_gone() -> None:
    """Redis wiped between a commit and its index update (S6): applying the update would
    leave a partial index that looks whole (its applied offset set again); it is refused,
    so the partition is retaken and its index rebuilt. A restore still starts from nothing."""
    settings = fresh_settings().redis
    index = HoldIndex(settings)
    try:
        with pytest.raises(RedisUnavailable, match="gone"):
            await index.apply([_hold("g1", "nurses", key=b"g1", partition=4)], [], {},
                              {("holds", 4): 12}, follow=True)  # fmt: skip
        assert await index.get("g1") is None
        assert not await index.intact("holds", 4)
        await index.apply([_hold("g1", "nurses", key=b"g1", partition=4)], [], {},
                          {("holds", 4): 12})  # fmt: skip
        assert await index.intact("holds", 4)
        await index.apply([], [("g1", "d\0ana", 4)], {}, {("holds", 4): 14}, follow=True)
        assert await index.get("g1") is None
    finally:
        await index.stop()
