"""Verifying the audit trail (pure; the callers read the topic or an export).

Each partition's chain is recomputed: keyed links with the key the event names, plain ones
as SHA-256; sequence numbers must follow on; checkpoints must carry their own MAC and vouch
for what precedes them. A chain that starts after seq 0 lost its front: that is retention's
doing only if a checkpoint vouches for where it starts and, when the retention is known, the
removed events were old enough for it. Checkpoints kept from an earlier export (an anchor)
must be found again: events removed from the end, or rewritten, show. Every problem is
reported with its partition, offset, sequence number and kind; a run of events with the same
problem is one report.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from hitl_gateway.audit import CHECKPOINT, GENESIS, checkpoint_mac, link
from hitl_gateway.audit_report import Chain, Kind, Problem, Verification

Record = tuple[int, int, bytes | None]  # partition, offset, value

# Gateway instances' and brokers' clocks differ a little: removed events count as inside the
# retention only when they were written this long after its horizon.
CLOCK_SLACK_MS = 10 * 60 * 1000

# Kinds that a run of consecutive events shares (one rewrite recomputes every later hash).
_RUNS = {Kind.MALFORMED, Kind.HASH_MISMATCH, Kind.UNKNOWN_KEY, Kind.UNKEYED_AFTER_KEYED}


@dataclass(frozen=True, slots=True)
class Retention:
    """What retention may have removed from the front of a partition: events written before
    ``horizon_ms`` (None: nothing, the retention is unlimited)."""

    horizon_ms: int | None

    @classmethod
    def of(cls, retention_ms: int, now_ms: int) -> Retention:
        return cls(None if retention_ms < 0 else now_ms - retention_ms)


@dataclass(frozen=True, slots=True)
class Anchor:
    """A genuine checkpoint from an earlier export: the chain had reached ``seq`` with
    ``hash`` at ``at_ms``."""

    seq: int
    hash: str
    at_ms: int


def _parse(value: bytes | None) -> dict[str, Any] | None:
    try:
        event = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _genuine(event: Mapping[str, Any], key: bytes) -> bool:
    """Whether a checkpoint's own MAC holds."""
    return hmac.compare_digest(checkpoint_mac(event, key), str(event.get("mac")))


def _linked(event: Mapping[str, Any], key: bytes | None) -> bool:
    prev = event.get("prev_hash")
    return isinstance(prev, str) and hmac.compare_digest(
        link(prev, event, key), str(event.get("hash"))
    )


class _Walk:
    """One partition's chain, event by event in offset order."""

    def __init__(self, partition: int, keys: Mapping[str, bytes], anchors: dict[int, Anchor]):
        self.chain = Chain(partition)
        self.problems: list[Problem] = []
        self._keys = keys
        self._anchors = anchors
        self._found: dict[int, tuple[Any, int]] = {}  # anchored seqs met: (hash, offset)
        self.anchored = 0  # anchored seqs found with the anchor's hash
        self._head: str | None = None  # what the next prev_hash must be (None: anything)
        self._seq: int | None = None  # the last keyed event's seq
        self._index = 0
        self._reported_at = -1  # the event index of the last problem (runs merge)
        self._cover: dict[str, Any] | None = None  # the first genuine checkpoint
        self._vouched = -1  # the last seq a genuine checkpoint vouches for
        self._genesis = False
        self._leading = 0  # unkeyed events before the first keyed one

    def report(self, offset: int, kind: Kind, message: str, seq: int | None = None) -> None:
        last = self.problems[-1] if self.problems else None
        run = last is not None and last.kind == kind and kind in _RUNS
        if last is not None and run and self._reported_at == self._index - 1:
            last.count += 1
            last.last_offset = offset
        else:
            self.problems.append(Problem(self.chain.partition, offset, kind, message, seq))
        self._reported_at = self._index

    def step(self, offset: int, value: bytes | None) -> None:
        c = self.chain
        self._index += 1
        c.events += 1
        c.last_offset = offset
        if c.first_offset is None:
            c.first_offset = offset
        event = _parse(value)
        if event is None:
            self.report(offset, Kind.MALFORMED, "not a JSON audit event")
            self._head = None
            return
        if self._index == 1:
            self._genesis = event.get("prev_hash") == GENESIS
        key_id = event.get("key_id")
        if key_id is None:
            self._unkeyed(offset, event)
        else:
            self._keyed(offset, event, str(key_id))
        claimed = event.get("hash")
        self._head = claimed if isinstance(claimed, str) else None

    def _follows(self, event: Mapping[str, Any]) -> str | None:
        """Why the event does not follow the one before it (None: it does)."""
        prev = event.get("prev_hash")
        if self._head is None or prev == self._head:
            return None
        return (
            f"prev_hash {prev} does not follow {self._head}: events removed, inserted or reordered"
        )

    def _unkeyed(self, offset: int, event: dict[str, Any]) -> None:
        self.chain.unkeyed += 1
        if self.chain.first_seq is None:
            self._leading += 1
        if self._seq is not None:
            message = "an unkeyed event after keyed ones: its plain SHA-256 link proves nothing"
            self.report(offset, Kind.UNKEYED_AFTER_KEYED, message)
        elif (broken := self._follows(event)) is not None:
            self.report(offset, Kind.BROKEN_LINK, broken)
        elif not _linked(event, None):
            self.report(offset, Kind.HASH_MISMATCH, "hash does not match the event")

    def _keyed(self, offset: int, event: dict[str, Any], key_id: str) -> None:
        c = self.chain
        seq = _int(event.get("seq"))
        if seq is None:
            self.report(offset, Kind.MALFORMED, "a keyed event without a sequence number")
            return
        c.key_ids.add(key_id)
        if c.first_seq is None:
            c.first_seq = seq
            if self._leading and seq != 0:
                why = f"the keyed chain starts at seq {seq} after unkeyed events: {seq} missing"
                self.report(offset, Kind.SEQ_GAP, why, seq)
        if self._seq is not None and seq != self._seq + 1:
            gap = seq - self._seq - 1
            why = f"{gap} event(s) missing" if gap > 0 else "repeated or out of order"
            self.report(offset, Kind.SEQ_GAP, f"seq {seq} follows seq {self._seq}: {why}", seq)
        elif (broken := self._follows(event)) is not None:
            self.report(offset, Kind.BROKEN_LINK, broken, seq)
        self._seq = c.last_seq = seq
        if seq in self._anchors:
            self._found[seq] = (event.get("hash"), offset)
        key = self._keys.get(key_id)
        if key is None:
            why = f"sealed with key id {key_id!r}, which is not in the verifier's key set"
            self.report(offset, Kind.UNKNOWN_KEY, why, seq)
        elif event.get("type") == CHECKPOINT:
            self._checkpoint(offset, seq, event, key)
        elif not _linked(event, key):
            why = f"hash does not match the event (HMAC with key {key_id}): changed after sealing"
            self.report(offset, Kind.HASH_MISMATCH, why, seq)

    def _checkpoint(self, offset: int, seq: int, event: dict[str, Any], key: bytes) -> None:
        key_id = event.get("key_id")
        if not _genuine(event, key):
            why = f"its MAC does not match its statement: not written by a holder of key {key_id}"
            self.report(offset, Kind.FORGED_CHECKPOINT, why, seq)
            return
        if not _linked(event, key):
            why = "a genuine statement whose link does not hold: moved or altered"
            self.report(offset, Kind.FORGED_CHECKPOINT, why, seq)
            return
        first, since = _int(event.get("first_seq")), _int(event.get("since_ms"))
        if (
            event.get("partition") != self.chain.partition
            or event.get("last_seq") != seq - 1
            or event.get("last_hash") != event.get("prev_hash")
            or first is None
            or first > seq
            or since is None
        ):
            why = (
                f"it vouches for partition {event.get('partition')} up to seq"
                f" {event.get('last_seq')}, which is not what precedes it"
            )
            self.report(offset, Kind.CHECKPOINT_MISMATCH, why, seq)
            return
        self.chain.checkpoints += 1
        self._vouched = seq
        if self._cover is None:
            self._cover = event

    def finish(self, retention: Retention | None) -> None:
        for problem in self.problems:
            late = problem.seq is not None and problem.seq > self._vouched
            if problem.kind is Kind.HASH_MISMATCH and late:
                problem.kind = Kind.TAIL_TAMPERED
                problem.message += "; after the last checkpoint"
        self._front(retention)
        self._anchored()

    def _front(self, retention: Retention | None) -> None:
        c = self.chain
        s = c.first_seq
        if s is None or self._leading:  # an unkeyed chain, or unkeyed events before seq 0
            c.front = "the chain's start" if self._genesis else "after GENESIS: not known"
            if s is not None:
                c.front += f"; {self._leading} unkeyed event(s) before seq {s}"
            return
        if s == 0:
            c.front = "the chain's start" if self._genesis else "seq 0 (unkeyed events before)"
            return
        cover = self._cover
        offset = c.first_offset or 0
        c.front = f"seq {s}: removed before it"
        if cover is None or cover["first_seq"] > s:
            why = (
                f"the trail starts at seq {s} and no checkpoint vouches for where it starts:"
                " events before it were removed"
            )
            self.report(offset, Kind.FRONT_TRUNCATED, why, s)
            return
        since = cover["since_ms"]
        vouched = (
            f"the checkpoint at seq {cover['seq']} vouches for seq {cover['first_seq']} on,"
            f" written from {_iso(since)}"
        )
        if retention is None:
            c.front = f"seq {s}: removed before it (retention not checked; {vouched})"
        elif retention.horizon_ms is None:
            why = f"events before seq {s} were removed; the retention is unlimited ({vouched})"
            self.report(offset, Kind.FRONT_TRUNCATED, why, s)
        elif since - CLOCK_SLACK_MS > retention.horizon_ms:
            why = (
                f"events before seq {s} were removed inside the retention: {vouched}, and"
                f" retention removes only events written before {_iso(retention.horizon_ms)}"
            )
            self.report(offset, Kind.FRONT_TRUNCATED, why, s)
        else:
            c.front = f"seq {s}: removed before it by retention ({vouched})"

    def _anchored(self) -> None:
        c = self.chain
        end = c.last_seq if c.last_seq is not None else -1
        beyond = [a for seq, a in self._anchors.items() if seq > end]
        if beyond:
            a = max(beyond, key=lambda a: a.seq)
            why = (
                f"the trail ends at seq {end if end >= 0 else 'none'}, but a checkpoint"
                f" from the anchor shows the chain had reached seq {a.seq} by {_iso(a.at_ms)}:"
                " events removed from the end"
            )
            self.report(c.last_offset if c.last_offset is not None else -1,
                        Kind.TAIL_TRUNCATED, why, a.seq)  # fmt: skip
        for seq, a in sorted(self._anchors.items()):
            if seq > end or c.first_seq is None or seq < c.first_seq:
                continue  # beyond the end (reported) or removed from the front
            found, offset = self._found.get(seq, (None, c.first_offset or 0))
            if found == a.hash:
                self.anchored += 1
                continue
            why = f"the event at seq {seq} is not the checkpoint the anchor holds: rewritten"
            self.report(offset, Kind.REWRITTEN, why, seq)


def anchors_of(
    records: Iterable[Record], keys: Mapping[str, bytes]
) -> tuple[dict[int, dict[int, Anchor]], list[Problem]]:
    """The genuine checkpoints of an earlier export, by partition and seq; the others are
    problems (an anchor is checked like the trail: by the keys, not trusted as a file)."""
    anchors: dict[int, dict[int, Anchor]] = {}
    problems: list[Problem] = []
    for partition, offset, value in records:
        event = _parse(value)
        if event is None or event.get("type") != CHECKPOINT or event.get("key_id") is None:
            continue
        seq, at_ms = _int(event.get("seq")), _int(event.get("at_ms"))
        key = keys.get(str(event["key_id"]))
        if key is None:
            why = f"an anchor checkpoint sealed with key id {event['key_id']!r}, not in the key set"
            problems.append(Problem(partition, offset, Kind.UNKNOWN_KEY, why, seq))
        elif (
            seq is None
            or at_ms is None
            or event.get("partition") != partition
            or not (_genuine(event, key) and _linked(event, key))
        ):
            why = "an anchor checkpoint whose MAC does not hold: not written by a key holder"
            problems.append(Problem(partition, offset, Kind.FORGED_CHECKPOINT, why, seq))
        else:
            anchors.setdefault(partition, {})[seq] = Anchor(seq, str(event["hash"]), at_ms)
    return anchors, problems


def verify(
    records: Iterable[Record],
    keys: Mapping[str, bytes] | None = None,
    *,
    retention: Retention | None = None,
    anchor: Iterable[Record] = (),
) -> Verification:
    """Verify (partition, offset, value) records, in offset order within each partition.
    ``keys``: the key ring by key id; ``retention``: what may have been removed from the
    front (None: not checked); ``anchor``: an earlier export whose checkpoints must be found
    again."""
    keys = keys or {}
    anchors, anchor_problems = anchors_of(anchor, keys)
    walks: dict[int, _Walk] = {}
    result = Verification()
    for partition, offset, value in records:
        walk = walks.get(partition)
        if walk is None:
            walk = walks[partition] = _Walk(partition, keys, anchors.get(partition, {}))
        walk.step(offset, value)
        result.events += 1
    for partition, found in anchors.items():
        walks.setdefault(partition, _Walk(partition, keys, found))
    result.problems += anchor_problems
    for partition in sorted(walks):
        walk = walks[partition]
        walk.finish(retention)
        result.chains[partition] = walk.chain
        result.problems += walk.problems
        result.anchored += walk.anchored
    return result
