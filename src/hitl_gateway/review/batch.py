"""One partition batch of decisions as the applier's outcomes see it: what they write."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hitl_gateway.audit import AuditChain
from hitl_gateway.index_entries import ResultKey
from hitl_gateway.sink import Outgoing
from hitl_gateway.stopswitch import SwitchEvent


@dataclass(slots=True)
class Applied:
    outgoing: list[Outgoing] = field(default_factory=list)
    results: dict[ResultKey, dict[str, Any]] = field(default_factory=dict)
    verdicts: list[tuple[str, str, str]] = field(default_factory=list)  # (pool, verdict, status)
    latencies_s: list[tuple[str, str, float]] = field(default_factory=list)  # pool, verdict, s
    refusals: list[str] = field(default_factory=list)
    calibration_events: list[str] = field(default_factory=list)  # event types
    moves: list[tuple[str, str]] = field(default_factory=list)  # (kind, pool): reassignments
    switches: list[SwitchEvent] = field(default_factory=list)  # stop switch events written


@dataclass(slots=True)
class Batch:
    """One partition batch as its outcomes see it: what they write to (``out``), the
    partition and its audit chain, and the decision record being applied."""

    out: Applied
    chain: AuditChain
    partition: int
    record: Any = None
    signer: str | None = None  # who signed the record being applied (review/signatures.py)
    # The partition's stop switch events before this batch, and the input offset a switch
    # command takes effect from (the offset this batch's transaction commits inputs up to).
    switches: list[SwitchEvent] = field(default_factory=list)
    switch_offset: int = 0
