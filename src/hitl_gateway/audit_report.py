"""What verifying the audit trail found (audit_verify.py): each problem with its partition,
offset, sequence number and kind, each partition's chain, and the lines ``audit verify``
prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    MALFORMED = "malformed"
    BROKEN_LINK = "broken_link"
    SEQ_GAP = "seq_gap"
    HASH_MISMATCH = "hash_mismatch"
    TAIL_TAMPERED = "tail_tampered"
    UNKNOWN_KEY = "unknown_key_id"
    UNKEYED_AFTER_KEYED = "unkeyed_after_keyed"
    FORGED_CHECKPOINT = "forged_checkpoint"
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"
    FRONT_TRUNCATED = "front_truncated"
    TAIL_TRUNCATED = "tail_truncated"
    REWRITTEN = "rewritten"


@dataclass(slots=True)
class Problem:
    partition: int
    offset: int
    kind: Kind
    message: str
    seq: int | None = None
    count: int = 1  # consecutive events with this problem, from ``offset`` to ``last_offset``
    last_offset: int | None = None

    def __str__(self) -> str:
        where = f"partition {self.partition} offset {self.offset}"
        if self.seq is not None:
            where += f" seq {self.seq}"
        if self.count > 1:
            where += f" (and the next {self.count - 1} events, to offset {self.last_offset})"
        return f"{where}: {self.kind}: {self.message}"


@dataclass(slots=True)
class Chain:
    """One partition's chain as verified."""

    partition: int
    events: int = 0
    unkeyed: int = 0
    checkpoints: int = 0
    first_offset: int | None = None
    last_offset: int | None = None
    first_seq: int | None = None  # of the first keyed event
    last_seq: int | None = None
    key_ids: set[str] = field(default_factory=set)
    front: str = ""  # what precedes the first event


@dataclass(slots=True)
class Verification:
    events: int = 0
    chains: dict[int, Chain] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    anchored: int = 0  # an anchor's checkpoints found again

    @property
    def partitions(self) -> int:
        return sum(1 for c in self.chains.values() if c.events)

    @property
    def first_break(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    @property
    def keyed(self) -> bool:
        return any(c.key_ids for c in self.chains.values())


def render(result: Verification, *, max_problems: int = 200) -> list[str]:
    """What ``audit verify`` prints: the verdict, each problem, each chain."""
    lines: list[str] = []
    if result.problems:
        lines.append(
            f"BROKEN: {len(result.problems)} problem(s) in {result.events} event(s) in"
            f" {result.partitions} chain(s)"
        )
        lines += [f"  {p}" for p in result.problems[:max_problems]]
        if len(result.problems) > max_problems:
            lines.append(f"  ... and {len(result.problems) - max_problems} more")
    else:
        lines.append(
            f"ok: {result.events} event(s) in {result.partitions} chain(s), every link holds"
        )
    for c in result.chains.values():
        if not c.events:
            continue
        seqs = f", seq {c.first_seq} to {c.last_seq}" if c.first_seq is not None else ""
        keys = f", key(s) {', '.join(sorted(c.key_ids))}" if c.key_ids else ", unkeyed"
        lines.append(
            f"partition {c.partition}: {c.events} event(s){seqs}, {c.checkpoints}"
            f" checkpoint(s){keys}; front: {c.front}"
        )
    if result.anchored:
        lines.append(f"anchor: {result.anchored} earlier checkpoint(s) found again")
    if result.events and not result.keyed:
        lines.append(
            "unkeyed: the links are plain SHA-256; whoever can write the topic can rewrite"
            " events and recompute every hash (docs/security.md)"
        )
    return lines
