"""Holds-topic records -> index changes: the last record per item wins, in topic order."""

from __future__ import annotations

import orjson

from hitl_gateway import headers
from hitl_gateway.index_entries import index_changes


def _hold(item: str, pool: str) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    meta = {"item_id": item, "pool": pool, "domain": "d", "sla_deadline_ms": 1, "held_at_ms": 1,
            "reviewers": 1, "content_hash": "h"}  # fmt: skip
    return item.encode(), b"{}", [(headers.HOLD, orjson.dumps(meta))]


def _tombstone(item: str, decision: str) -> tuple[bytes, None, list[tuple[str, bytes]]]:
    return item.encode(), None, [(headers.DECISION_ID, decision.encode())]


def test_last_record_per_item_wins() -> None:
    upserts, removals = index_changes(
        [
            _hold("a", "p1"),
            _hold("a", "p2"),  # a vote or an escalation updated it
            _hold("b", "p1"),
            _tombstone("b", "d-b"),  # closed in the same batch
            _tombstone("c", "d-c"),
            _hold("c", "p1"),  # closed, then the same id held again
        ],
        partition=2,
    )
    assert sorted((h.meta.item_id, h.meta.pool, h.partition) for h in upserts) == [
        ("a", "p2", 2),
        ("c", "p1", 2),
    ]
    assert removals == [("b", "d-b", 2)]


def test_a_tombstone_without_a_decision_still_closes() -> None:
    _, removals = index_changes([(b"x", None, [])], partition=0)
    assert removals == [("x", "closed", 0)]
