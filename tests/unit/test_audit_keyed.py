"""The keyed audit chain and its checkpoints: sealing, rollback, restoring a partition's
chain, and what ``audit verify`` reports for each kind of tampering: an event changed in the
middle or at the end, events removed at the front or the end, a forged checkpoint, key
rotation and an unknown key id."""

from __future__ import annotations

import hashlib
import hmac
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from hitl_gateway.audit import (
    CHECKPOINT,
    GENESIS,
    AuditChain,
    ChainHead,
    Hmac,
    Sealing,
    SealingKey,
    canonical,
    checkpoint_mac,
    link,
    restore,
)
from hitl_gateway.audit_report import Kind, render
from hitl_gateway.audit_verify import CLOCK_SLACK_MS, Retention, verify
from hitl_gateway.recovery import audit_head

KEYS = {"k1": b"1" * 32, "k2": b"2" * 32}
T0 = 1_795_000_000_000  # ms
DAY_MS = 86_400_000
Record = tuple[int, int, bytes | None]


class Clock:
    def __init__(self, ms: int = T0) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def _chain(
    key_id: str = "k1",
    *,
    every: int = 5,
    interval_ms: int = 3_600_000,
    head: ChainHead = ChainHead(),  # noqa: B008 - immutable
    partition: int = 0,
    clock: Clock | None = None,
) -> AuditChain:
    sealing = Sealing(SealingKey(key_id, KEYS[key_id]), every, interval_ms)
    return AuditChain(head, partition=partition, sealing=sealing, clock=clock or Clock())


def _run(
    chain: AuditChain, n: int, clock: Clock, *, per_batch: int = 1, first: int = 0
) -> list[bytes]:
    """``n`` events in transactions of ``per_batch``, each ended as the commit path does:
    a checkpoint when one is due, then the commit. A second passes per transaction."""
    out: list[bytes] = []
    for i in range(first, first + n):
        out.append(chain.seal({"type": "routed", "item_id": f"i{i}", "at_ms": clock.ms}))
        if (i + 1 - first) % per_batch == 0 or i == first + n - 1:
            clock.ms += 1_000
            checkpoint = chain.checkpoint(clock.ms)
            if checkpoint is not None:
                out.append(checkpoint)
            chain.commit()
    return out


def _records(values: list[bytes], partition: int = 0, first_offset: int = 0) -> list[Record]:
    return [(partition, first_offset + n, v) for n, v in enumerate(values)]


def _trail(n: int = 12, **kwargs: Any) -> list[Record]:
    clock = Clock()
    return _records(_run(_chain(clock=clock, **kwargs), n, clock))


def _event(record: Record) -> dict[str, Any]:
    return dict(orjson.loads(record[2] or b""))


def _put(trail: list[Record], n: int, event: dict[str, Any]) -> None:
    p, offset, _ = trail[n]
    trail[n] = (p, offset, orjson.dumps(event))


def _kinds(trail: list[Record], **kwargs: Any) -> list[tuple[Kind, int | None]]:
    return [(p.kind, p.seq) for p in verify(trail, KEYS, **kwargs).problems]


# -- sealing -----------------------------------------------------------------------------


def test_a_keyed_event_names_its_key_and_seq_and_its_hash_is_an_hmac() -> None:
    chain = _chain()
    sealed = chain.seal({"type": "routed", "item_id": "a"})
    event = orjson.loads(sealed)
    assert (event["seq"], event["key_id"], event["prev_hash"]) == (0, "k1", GENESIS)
    body = canonical(event)
    assert (
        event["hash"] == hmac.new(KEYS["k1"], GENESIS.encode() + b"\n" + body, "sha256").hexdigest()
    )
    assert event["hash"] == link(GENESIS, event, KEYS["k1"]) != link(GENESIS, event)
    second = orjson.loads(chain.seal({"type": "routed", "item_id": "b"}))
    assert (second["seq"], second["prev_hash"]) == (1, event["hash"])


@pytest.mark.parametrize("size", [16, 32, 64, 65, 200])
def test_the_precomputed_hmac_is_rfc_2104_hmac_sha256(size: int) -> None:
    key = bytes(range(256))[:size]
    for message in (b"", b"x", b"y" * 1000):
        assert Hmac(key).hexdigest(message) == hmac.digest(key, message, "sha256").hex()


def test_an_event_carrying_old_links_and_seq_is_sealed_afresh() -> None:
    chain = _chain()
    first = chain.seal({"n": 1})
    copied = orjson.loads(first) | {"n": 2, "key_id": "k9"}
    second = orjson.loads(chain.seal(copied))
    assert (second["seq"], second["key_id"], second["prev_hash"]) == (
        1,
        "k1",
        orjson.loads(first)["hash"],
    )
    assert verify(_records([first, orjson.dumps(second)]), KEYS).problems == []


def test_a_checkpoint_closes_every_n_events_and_vouches_for_them() -> None:
    clock = Clock()
    values = _run(_chain(clock=clock, every=5), 12, clock, per_batch=3)
    events = [orjson.loads(v) for v in values]
    checkpoints = [e for e in events if e["type"] == CHECKPOINT]
    # Transactions of 3: the one that reaches 5 waiting events ends with a checkpoint.
    assert [(c["first_seq"], c["last_seq"], c["seq"]) for c in checkpoints] == [
        (0, 5, 6),
        (7, 12, 13),
    ]
    assert [e["seq"] for e in events] == list(range(14))
    first = checkpoints[0]
    assert first["last_hash"] == first["prev_hash"] == events[5]["hash"]
    assert first["since_ms"] == T0
    assert first["at_ms"] == T0 + 2_000
    assert first["mac"] == checkpoint_mac(first, KEYS["k1"])
    assert checkpoints[1]["since_ms"] == first["at_ms"]


def test_a_checkpoint_is_due_after_the_interval_with_few_events() -> None:
    clock = Clock()
    chain = _chain(clock=clock, every=1_000, interval_ms=60_000)
    chain.seal({"n": 1})
    assert chain.checkpoint(T0 + 59_999) is None
    assert orjson.loads(chain.checkpoint(T0 + 60_000) or b"")["last_seq"] == 0
    chain.commit()
    assert chain.checkpoint(T0 + 999_999) is None  # nothing waits for one


def test_an_unkeyed_chain_has_no_seq_and_no_checkpoints() -> None:
    chain = AuditChain()
    event = orjson.loads(chain.seal({"n": 1}))
    assert "seq" not in event
    assert "key_id" not in event
    assert chain.checkpoint(T0 + 10**9) is None


def test_a_rolled_back_batch_takes_back_its_seqs_and_its_checkpoint() -> None:
    clock = Clock()
    chain = _chain(clock=clock, every=2)
    committed = _run(chain, 2, clock, per_batch=2)  # two events and a checkpoint
    chain.seal({"n": "aborted"})
    chain.seal({"n": "aborted too"})
    assert chain.checkpoint(T0 + 10_000) is not None
    chain.rollback()
    replayed = _run(chain, 2, clock, per_batch=2, first=2)
    events = [orjson.loads(v) for v in committed + replayed]
    assert [e["seq"] for e in events] == list(range(6))
    assert verify(_records(committed + replayed), KEYS).problems == []


def test_rewinding_a_record_takes_back_its_seq() -> None:
    chain = _chain()
    chain.seal({"n": 1})
    mark = chain.pending
    chain.seal({"n": "dropped"})
    chain.rewind(mark)
    assert orjson.loads(chain.seal({"n": 2}))["seq"] == 1


# -- restoring a partition's chain ---------------------------------------------------------


def _timed(values: list[bytes]) -> list[tuple[bytes | None, int]]:
    return [(v, T0 + n) for n, v in enumerate(values)]


def test_a_taken_partition_continues_the_chain_and_its_checkpoint_range() -> None:
    clock = Clock()
    first = _run(_chain(clock=clock, every=5), 8, clock)  # checkpoint at seq 5, then 3 events
    head, known = restore(_timed(first[-4:]), complete=False)
    assert known
    checkpoint = orjson.loads(first[5])
    assert head == ChainHead(orjson.loads(first[-1])["hash"], 9, 6, checkpoint["at_ms"])
    more = _run(_chain("k2", clock=clock, every=5, head=head), 6, clock, first=8)
    values = first + more
    assert verify(_records(values), KEYS).problems == []
    checkpoints = [e for e in map(orjson.loads, values) if e["type"] == CHECKPOINT]
    assert [(c["first_seq"], c["last_seq"]) for c in checkpoints] == [(0, 4), (6, 10)]


def test_restoring_finds_the_chain_start_or_says_it_looked_too_little() -> None:
    clock = Clock()
    values = _run(_chain(clock=clock, every=100), 4, clock)
    assert restore(_timed(values), complete=True) == (
        ChainHead(orjson.loads(values[-1])["hash"], 4, 0, T0),
        True,
    )
    head, known = restore(_timed(values[2:]), complete=False)
    assert not known  # neither a checkpoint nor seq 0 in what was read: read further back
    assert (head.seq, head.first_seq, head.since_ms) == (4, 4, None)
    assert restore([], complete=True) == (ChainHead(), True)
    assert restore([(b"garbage", T0)], complete=True) == (ChainHead(), True)


def test_a_keyed_chain_starts_at_seq_0_after_unkeyed_events() -> None:
    legacy = AuditChain()
    old = [legacy.seal({"n": n}) for n in range(3)]
    head, known = restore(_timed(old), complete=False)
    assert known
    assert head == ChainHead(legacy.pending[0])
    clock = Clock()
    new = _run(_chain(clock=clock, head=head), 7, clock)
    result = verify(_records(old + new), KEYS)
    assert result.problems == []
    assert result.chains[0].front == "the chain's start; 3 unkeyed event(s) before seq 0"


# -- verification: the untouched trail ----------------------------------------------------


def test_an_untouched_keyed_trail_verifies() -> None:
    trail = _trail(12) + [(1, n, v) for _, n, v in _trail(3, partition=1)]
    result = verify(trail, KEYS, retention=Retention.of(7 * DAY_MS, T0 + 60_000))
    assert result.problems == []
    assert (result.events, result.partitions, result.keyed) == (17, 2, True)
    assert (
        result.chains[0].first_seq,
        result.chains[0].last_seq,
        result.chains[0].checkpoints,
    ) == (0, 13, 2)
    lines = render(result)
    assert lines[0] == "ok: 17 event(s) in 2 chain(s), every link holds"
    summary = "partition 0: 14 event(s), seq 0 to 13, 2 checkpoint(s), key(s) k1"
    assert f"{summary}; front: the chain's start" in lines


# -- in the middle, at the end -------------------------------------------------------------


def test_an_event_changed_in_the_middle_is_a_hash_mismatch() -> None:
    trail = _trail(12)
    _put(trail, 2, _event(trail[2]) | {"item_id": "someone-else"})
    [problem] = verify(trail, KEYS).problems
    assert (problem.kind, problem.offset, problem.seq) == (Kind.HASH_MISMATCH, 2, 2)
    assert str(problem).startswith("partition 0 offset 2 seq 2: hash_mismatch: hash does not match")


def test_recomputing_the_hashes_without_the_key_does_not_help() -> None:
    trail = _trail(12)
    prev = _event(trail[1])["hash"]
    for n in range(2, len(trail)):  # rewrite from seq 2 on, relinking everything after it
        event = _event(trail[n]) | {"prev_hash": prev}
        if n == 2:
            event["route"] = "pass"
        event["hash"] = prev = hashlib.sha256(prev.encode() + b"\n" + canonical(event)).hexdigest()
        _put(trail, n, event)
    problems = verify(trail, KEYS).problems
    # Every checkpoint after seq 2 was rewritten too, so none vouches for it any more.
    assert (problems[0].kind, problems[0].seq, problems[0].count) == (Kind.TAIL_TAMPERED, 2, 3)
    assert [p.kind for p in problems] == [Kind.TAIL_TAMPERED, Kind.FORGED_CHECKPOINT] * 2 + [
        Kind.TAIL_TAMPERED
    ]


def test_an_event_changed_at_the_end_is_tail_tampering() -> None:
    trail = _trail(12)  # the last checkpoint is at seq 11; seq 12 and 13 follow it
    event = _event(trail[-1]) | {"verdict": "approve"}
    event["hash"] = hashlib.sha256(
        event["prev_hash"].encode() + b"\n" + canonical(event)
    ).hexdigest()
    _put(trail, len(trail) - 1, event)
    [problem] = verify(trail, KEYS).problems
    assert (problem.kind, problem.seq, problem.offset) == (Kind.TAIL_TAMPERED, 13, 13)
    assert "after the last checkpoint" in problem.message


def test_an_event_removed_in_the_middle_is_a_seq_gap() -> None:
    trail = _trail(12)
    del trail[3]
    assert _kinds(trail) == [(Kind.SEQ_GAP, 4)]


# -- at the front ---------------------------------------------------------------------------


def test_a_front_cut_past_every_checkpoint_is_truncation() -> None:
    trail = _trail(12)[12:]  # seq 12 and 13: after the last checkpoint (seq 11)
    [problem] = verify(trail, KEYS).problems
    assert (problem.kind, problem.seq, problem.offset) == (Kind.FRONT_TRUNCATED, 12, 12)
    assert "no checkpoint vouches" in problem.message


def test_an_unkeyed_event_appended_does_not_hide_a_front_cut() -> None:
    trail = _trail(12)[12:]
    head = _event(trail[-1])["hash"]
    trail.append((0, 14, AuditChain(ChainHead(head)).seal({"type": "routed"})))
    assert _kinds(trail) == [(Kind.UNKEYED_AFTER_KEYED, None), (Kind.FRONT_TRUNCATED, 12)]


def test_a_front_cut_a_checkpoint_vouches_for_is_judged_by_the_retention() -> None:
    trail = _trail(12)[3:]  # starts at seq 3; the checkpoint at seq 5 vouches for seq 0 on
    recent = T0 + 60_000
    assert _kinds(trail) == []  # retention unknown: accepted, and said so
    front = verify(trail, KEYS).chains[0].front
    assert front.startswith("seq 3: removed before it (retention not checked")
    # Written at T0: inside a 7-day retention a minute later, so not retention's doing.
    assert _kinds(trail, retention=Retention.of(7 * DAY_MS, recent)) == [(Kind.FRONT_TRUNCATED, 3)]
    assert _kinds(trail, retention=Retention(None)) == [(Kind.FRONT_TRUNCATED, 3)]
    # Eight days later a 7-day retention may have removed them.
    later = Retention.of(7 * DAY_MS, T0 + 8 * DAY_MS)
    assert _kinds(trail, retention=later) == []
    assert "removed before it by retention" in verify(trail, KEYS, retention=later).chains[0].front
    # Within the clocks' slack of the horizon: given the benefit of the doubt.
    edge = Retention(T0 - CLOCK_SLACK_MS + 1)
    assert _kinds(trail, retention=edge) == []


def test_a_front_cut_at_a_checkpoint_is_vouched_for_by_the_next_one() -> None:
    trail = _trail(12)[6:]  # starts right after the first checkpoint
    result = verify(trail, KEYS, retention=Retention.of(7 * DAY_MS, T0 + 8 * DAY_MS))
    assert result.problems == []
    assert "the checkpoint at seq 11 vouches for seq 6 on" in result.chains[0].front


# -- checkpoints ------------------------------------------------------------------------------


def test_a_forged_checkpoint_is_reported() -> None:
    trail = _trail(12)[3:]
    checkpoint = _event(trail[2])  # seq 5
    assert checkpoint["type"] == CHECKPOINT
    # To pass a front cut off as retention, claim the range started long ago; relink it
    # with an HMAC under a guessed key.
    checkpoint["since_ms"] = T0 - 30 * DAY_MS
    checkpoint["mac"] = checkpoint_mac(checkpoint, b"guess" * 8)
    checkpoint["hash"] = link(checkpoint["prev_hash"], checkpoint, b"guess" * 8)
    _put(trail, 2, checkpoint)
    problems = verify(trail, KEYS, retention=Retention.of(7 * DAY_MS, T0 + 60_000)).problems
    assert [(p.kind, p.seq) for p in problems] == [
        (Kind.FORGED_CHECKPOINT, 5),
        (Kind.BROKEN_LINK, 6),
        (Kind.FRONT_TRUNCATED, 3),  # the next genuine checkpoint does not vouch for seq 3
    ]
    assert "not written by a holder of key k1" in problems[0].message


def test_a_checkpoint_inserted_by_someone_without_the_key_is_forged() -> None:
    trail = _trail(3)
    last = _event(trail[-1])
    fake = {"type": CHECKPOINT, "partition": 0, "first_seq": 0, "last_seq": 2,
            "last_hash": last["hash"], "since_ms": T0, "at_ms": T0 + 5_000, "key_id": "k1",
            "seq": 3, "mac": "0" * 64, "prev_hash": last["hash"]}  # fmt: skip
    fake["hash"] = link(last["hash"], fake, KEYS["k1"])  # even with a good link
    trail.append((0, 3, orjson.dumps(fake)))
    assert _kinds(trail) == [(Kind.FORGED_CHECKPOINT, 3)]


def test_a_genuine_checkpoint_copied_to_another_partition_vouches_for_nothing_there() -> None:
    zero, one = _trail(12), [(1, n, v) for _, n, v in _trail(12, partition=1)]
    one[5] = (1, 5, zero[5][2])
    kinds = [(p.partition, p.kind) for p in verify(zero + one, KEYS).problems]
    assert (1, Kind.FORGED_CHECKPOINT) in kinds or (1, Kind.CHECKPOINT_MISMATCH) in kinds


# -- keys -------------------------------------------------------------------------------------


def _rotated() -> list[Record]:
    """Seq 0-6 sealed with k1, then the partition taken by an instance whose key is k2."""
    clock = Clock()
    old = _run(_chain("k1", clock=clock), 6, clock)
    head, _ = restore(_timed(old), complete=True)
    return _records(old + _run(_chain("k2", clock=clock, head=head), 6, clock, first=6))


def test_a_chain_across_a_key_rotation_verifies_with_both_keys() -> None:
    trail = _rotated()
    result = verify(trail, KEYS)
    assert result.problems == []
    assert result.chains[0].key_ids == {"k1", "k2"}


def test_a_key_missing_from_the_key_set_is_an_unknown_key_id() -> None:
    trail = _rotated()
    [problem] = verify(trail, {"k2": KEYS["k2"]}).problems
    assert (problem.kind, problem.seq, problem.count) == (Kind.UNKNOWN_KEY, 0, 7)
    assert "'k1', which is not in the verifier's key set" in problem.message
    [problem] = verify(trail, {}).problems  # no keys at all: nothing keyed can be checked
    assert (problem.kind, problem.count) == (Kind.UNKNOWN_KEY, len(trail))


def test_an_event_naming_a_key_nobody_has_is_reported() -> None:
    trail = _trail(4)
    _put(trail, 1, _event(trail[1]) | {"key_id": "k9"})
    assert _kinds(trail) == [(Kind.UNKNOWN_KEY, 1)]


def test_an_unkeyed_event_after_keyed_ones_is_reported() -> None:
    trail = _trail(4)
    head = _event(trail[-1])["hash"]
    forged = AuditChain(ChainHead(head)).seal({"type": "routed", "item_id": "late"})
    trail.append((0, len(trail), forged))
    assert _kinds(trail) == [(Kind.UNKEYED_AFTER_KEYED, None)]


# -- an anchor: checkpoints from an earlier export ---------------------------------------------


def test_events_removed_from_the_end_show_against_an_earlier_export() -> None:
    earlier = _trail(12)
    assert verify(earlier, KEYS, anchor=earlier).anchored == 2
    cut = earlier[:9]  # seq 0-8: the checkpoint at seq 11 is gone
    assert _kinds(cut) == []  # on its own the cut does not show
    problems = verify(cut, KEYS, anchor=earlier).problems
    assert [(p.kind, p.seq) for p in problems] == [(Kind.TAIL_TRUNCATED, 11)]
    assert "the trail ends at seq 8" in problems[0].message


def test_a_rewritten_history_shows_against_an_earlier_export() -> None:
    earlier = _trail(12)
    clock = Clock()  # the same events sealed again from seq 0: a whole new, valid chain
    other = _records(_run(_chain(clock=clock), 11, clock, per_batch=2))
    assert _kinds(other) == []
    kinds = _kinds(other, anchor=earlier)
    assert (Kind.REWRITTEN, 5) in kinds


def test_a_forged_anchor_is_not_trusted() -> None:
    earlier = _trail(12)
    checkpoint = _event(earlier[11]) | {"last_seq": 500, "seq": 501}
    _put(earlier, 11, checkpoint)
    problems = verify(_trail(12), KEYS, anchor=earlier).problems
    assert [p.kind for p in problems] == [Kind.FORGED_CHECKPOINT]


# -- reading a partition back to its last checkpoint ----------------------------------------


class FakeReader:
    """A partition's committed records by offset, every other offset a transaction marker."""

    def __init__(self, values: list[bytes]) -> None:
        self.records = [
            SimpleNamespace(offset=2 * n, value=v, timestamp=T0 + n) for n, v in enumerate(values)
        ]
        self.end = 2 * len(values)
        self.reads: list[int] = []

    async def window(self, tp: TopicPartition, size: int) -> tuple[int, int]:
        return max(0, self.end - size), self.end

    async def tail(self, tp: TopicPartition) -> list[Any]:
        return self.records[-8:]

    async def read(self, tp: TopicPartition, start: int | None) -> tuple[list[Any], int]:
        self.reads.append(self.end - (start or 0))
        return [r for r in self.records if r.offset >= (start or 0)], self.end


async def test_taking_a_partition_reads_back_to_its_last_checkpoint() -> None:
    clock = Clock()
    values = _run(_chain(clock=clock, every=50), 80, clock)  # checkpoint at seq 50, then 29
    reader = FakeReader(values)
    head = await audit_head(reader, "audit", 0, scan_offsets=10_000)  # type: ignore[arg-type]
    assert reader.reads == [16, 128]
    assert (head.seq, head.first_seq) == (81, 51)
    far = FakeReader(values)
    head = await audit_head(far, "audit", 0, scan_offsets=40)  # type: ignore[arg-type]
    assert far.reads == [16, 40]  # bounded: the range starts afresh at the next event
    assert (head.seq, head.first_seq, head.since_ms) == (81, 81, None)
    unkeyed = FakeReader(values)
    assert (await audit_head(unkeyed, "audit", 0, None)).hash == head.hash  # type: ignore[arg-type]
