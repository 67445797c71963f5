"""The audit hash chain: links, rollback of an aborted batch, and tamper detection."""

from __future__ import annotations

import orjson

from hitl_gateway.audit import GENESIS, AuditChain, head_of, link, verify


def _trail(n: int, partition: int = 0) -> list[tuple[int, int, bytes | None]]:
    chain = AuditChain()
    return [(partition, i, chain.seal({"type": "routed", "item_id": f"i{i}"})) for i in range(n)]


def test_an_intact_trail_verifies() -> None:
    trail = _trail(5) + _trail(3, partition=1)
    result = verify(trail)
    assert (result.first_break, result.events, result.partitions) == (None, 8, 2)


def test_a_changed_event_is_the_first_broken_link() -> None:
    trail = _trail(5)
    p, offset, value = trail[2]
    event = orjson.loads(value or b"")
    event["item_id"] = "someone-else"
    trail[2] = (p, offset, orjson.dumps(event))
    broken = verify(trail).first_break
    assert broken is not None
    assert (broken.partition, broken.offset) == (0, 2)
    assert "does not match" in broken.problem


def test_a_removed_event_breaks_the_chain() -> None:
    trail = _trail(5)
    del trail[1]
    broken = verify(trail).first_break
    assert broken is not None
    assert broken.offset == 2
    assert "does not follow" in broken.problem


def test_rolled_back_links_are_not_kept() -> None:
    chain = AuditChain()
    committed = chain.seal({"n": 1})
    chain.commit()
    chain.seal({"n": 2})  # part of a batch whose transaction aborted
    chain.rollback()
    replayed = chain.seal({"n": 2})
    chain.commit()
    assert verify([(0, 0, committed), (0, 1, replayed)]).first_break is None
    assert head_of([committed, replayed]) == chain.head != GENESIS


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
