"""A lane's buffer: batches in fetch order, and where to rewind after a failed one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from hitl_gateway.audit import AuditChain
from hitl_gateway.lane import Lane

OUT = TopicPartition("outputs", 2)
DEC = TopicPartition("decisions", 2)


@dataclass
class Rec:
    offset: int


def _lane() -> Lane:
    producer: Any = object()  # never used by the buffer
    return Lane(2, producer, AuditChain())


def _offsets(work: dict[TopicPartition, list[Rec]]) -> dict[TopicPartition, list[int]]:
    return {tp: [r.offset for r in records] for tp, records in work.items()}


def test_take_gives_batches_in_fetch_order_up_to_the_limit_per_partition() -> None:
    lane = _lane()
    lane.add(OUT, [Rec(o) for o in range(10, 17)])
    lane.add(DEC, [Rec(3)])
    lane.add(OUT, [Rec(20)])  # a gap: transaction markers occupy offsets
    assert lane.count == 9
    assert lane.ready.is_set()
    assert _offsets(lane.take(5)) == {OUT: [10, 11, 12, 13, 14], DEC: [3]}
    assert lane.count == 3
    assert lane.ready.is_set()
    assert _offsets(lane.take(5)) == {OUT: [15, 16, 20]}
    assert lane.count == 0
    assert not lane.ready.is_set()
    assert lane.take(5) == {}


def test_rewind_goes_back_to_the_failed_batch_and_drops_what_was_fetched_after_it() -> None:
    lane = _lane()
    lane.add(OUT, [Rec(o) for o in range(100, 110)])
    lane.add(DEC, [Rec(o) for o in range(7, 9)])
    failed = lane.take(4)  # outputs 100..103, decisions 7..8
    lane.add(OUT, [Rec(110)])
    assert lane.rewind_positions(failed) == {OUT: 100, DEC: 7}
    assert lane.count == 0
    assert not lane.ready.is_set()
    assert lane.take(4) == {}


def test_rewind_covers_a_partition_only_buffered_after_the_failed_batch() -> None:
    lane = _lane()
    lane.add(OUT, [Rec(5), Rec(6)])
    failed = lane.take(10)
    lane.add(DEC, [Rec(40), Rec(41)])  # fetched while the batch was in flight
    assert lane.rewind_positions(failed) == {OUT: 5, DEC: 40}


def test_holds_tells_whether_a_topic_has_records_waiting() -> None:
    lane = _lane()
    assert not lane.holds("decisions")
    lane.add(OUT, [Rec(1)])
    assert not lane.holds("decisions")
    lane.add(DEC, [Rec(9)])
    assert lane.holds("decisions")
    lane.take(10)
    assert not lane.holds("decisions")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_oldest_fetch_time_follows_what_is_left_after_a_partial_take() -> None:
    clock = Clock()
    producer: Any = object()
    lane = Lane(2, producer, AuditChain(), clock=clock)
    lane.add(OUT, [Rec(o) for o in range(0, 4)])  # fetched at 100
    clock.now = 101.0
    lane.add(OUT, [Rec(o) for o in range(4, 8)])  # fetched at 101
    lane.add(DEC, [Rec(1)])  # fetched at 101
    assert lane.oldest_monotonic == 100.0
    clock.now = 105.0
    lane.take(3)  # outputs 0..2 and the decision: output 3 (fetched at 100) is left
    assert lane.oldest_monotonic == 100.0
    lane.take(1)  # output 3: what is left was fetched at 101, not at the take (105)
    assert lane.oldest_monotonic == 101.0
    lane.take(2)
    assert lane.oldest_monotonic == 101.0
    lane.take(10)
    assert lane.count == 0
    clock.now = 107.0
    lane.add(OUT, [Rec(9)])
    assert lane.oldest_monotonic == 107.0
    failed = lane.take(10)
    lane.add(OUT, [Rec(10)])
    assert lane.rewind_positions(failed) == {OUT: 9}
    clock.now = 108.0
    lane.add(DEC, [Rec(2)])  # the rewind forgot every fetch time
    assert lane.oldest_monotonic == 108.0
