"""The audit hash chain without a key: links, rollback of an aborted batch, and tamper
detection (keyed chains and checkpoints: test_audit_keyed.py)."""

from __future__ import annotations

import orjson

from hitl_gateway.audit import GENESIS, AuditChain, head_of, link
from hitl_gateway.audit_report import Kind, render
from hitl_gateway.audit_verify import verify


def _trail(n: int, partition: int = 0) -> list[tuple[int, int, bytes | None]]:
    chain = AuditChain()
    return [(partition, i, chain.seal({"type": "routed", "item_id": f"i{i}"})) for i in range(n)]


def test_an_intact_trail_verifies_and_says_it_is_unkeyed() -> None:
    trail = _trail(5) + _trail(3, partition=1)
    result = verify(trail)
    assert (result.first_break, result.events, result.partitions) == (None, 8, 2)
    assert not result.keyed
    lines = render(result)
    assert lines[0] == "ok: 8 event(s) in 2 chain(s), every link holds"
    assert any(line.startswith("unkeyed: the links are plain SHA-256") for line in lines)


def test_a_changed_event_is_reported_where_it_is() -> None:
    trail = _trail(5)
    p, offset, value = trail[2]
    event = orjson.loads(value or b"")
    event["item_id"] = "someone-else"
    trail[2] = (p, offset, orjson.dumps(event))
    broken = verify(trail).first_break
    assert broken is not None
    assert (broken.partition, broken.offset, broken.kind) == (0, 2, Kind.HASH_MISMATCH)
    assert str(broken) == "partition 0 offset 2: hash_mismatch: hash does not match the event"


def test_a_removed_event_breaks_the_chain() -> None:
    trail = _trail(5)
    del trail[1]
    result = verify(trail)
    [broken] = result.problems
    assert (broken.offset, broken.kind) == (2, Kind.BROKEN_LINK)
    assert "does not follow" in broken.message


def test_every_problem_is_reported_not_only_the_first() -> None:
    trail = _trail(6)
    for n in (1, 4):
        event = orjson.loads(trail[n][2] or b"") | {"item_id": "x"}
        trail[n] = (0, n, orjson.dumps(event))
    trail[5] = (0, 5, b"not json")
    result = verify(trail)
    assert [(p.offset, p.kind) for p in result.problems] == [
        (1, Kind.HASH_MISMATCH),
        (4, Kind.HASH_MISMATCH),
        (5, Kind.MALFORMED),
    ]
    assert render(result)[0] == "BROKEN: 3 problem(s) in 6 event(s) in 1 chain(s)"


def test_rolled_back_links_are_not_kept() -> None:
    chain = AuditChain()
    committed = chain.seal({"n": 1})
    chain.commit()
    chain.seal({"n": 2})  # part of a batch whose transaction aborted
    chain.rollback()
    replayed = chain.seal({"n": 2})
    chain.commit()
    assert verify([(0, 0, committed), (0, 1, replayed)]).first_break is None
    assert head_of([committed, replayed]) == chain.head.hash != GENESIS


def test_sealing_an_event_that_carries_old_links_replaces_them() -> None:
    chain = AuditChain()
    first = chain.seal({"n": 1})
    copied = orjson.loads(first) | {"n": 2}  # an event built from a sealed one
    second = chain.seal(copied)
    event = orjson.loads(second)
    assert event["prev_hash"] == orjson.loads(first)["hash"]
    assert event["hash"] == link(event["prev_hash"], event)
    assert verify([(0, 0, first), (0, 1, second)]).first_break is None
    assert copied["prev_hash"] == GENESIS  # the caller's event is not changed
