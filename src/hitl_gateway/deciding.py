"""Routing's reads of Redis for one partition batch: the policy decisions (a stop switch's
override included), with budget slots claimed atomically, then the id claims of the records
that would write a hold (ids.py).

Both run before anything is produced; a Redis failure here rewinds the batch (commit.py).
"""

from __future__ import annotations

from typing import Any

from hitl_gateway.budgets import RedisBudgets
from hitl_gateway.ids import Claimed, HeldIds, claim_source
from hitl_gateway.models import InputRecord, Invalid, Route
from hitl_gateway.outputs import content_hash_of
from hitl_gateway.policy.budget import MemoryLedger
from hitl_gateway.policy.engine import Decision, decide
from hitl_gateway.policy.loader import PolicySet
from hitl_gateway.policy.selection import candidate_claim_keys
from hitl_gateway.stopswitch import SwitchEvent, active, override


async def decide_all(
    budgets: RedisBudgets | None,
    records: list[Any],
    verdicts: list[InputRecord | Invalid],
    policies: PolicySet,
    switches: list[SwitchEvent] | None = None,
) -> list[Decision | None]:
    """``switches``: the partition's stop switch events. A record under an active switch is
    held instead of passing (stopswitch.override), before any budget slot is claimed for it."""
    valid = [(i, v) for i, v in enumerate(verdicts) if isinstance(v, InputRecord)]
    # Each budget key, with the ids of the records that might claim a slot in it.
    keys: dict[str, list[str]] = {}
    for i, v in valid:
        for key in candidate_claim_keys(v, policies, records[i].timestamp):
            keys.setdefault(key, []).append(v.id)
    ledger = MemoryLedger()
    if keys:
        if budgets is None:
            raise RuntimeError("policies with quotas or budgets need Redis")
        ledger = await budgets.snapshot(keys)
    decided: dict[int, Decision] = {}
    pending = valid
    # Decide; claim the slots atomically; where a cap was reached meanwhile (another
    # partition or instance), mark it full and decide those records again.
    while pending:
        for i, v in pending:
            decided[i] = decide(v, policies, timestamp_ms=records[i].timestamp, budgets=ledger)
            if switches:
                switch = active(switches, decided[i].domain, records[i].offset)
                if switch is not None:
                    decided[i] = override(decided[i], switch, records[i].timestamp)
            ledger.apply(v.id, decided[i].claims)
        claiming = [(i, v) for i, v in pending if decided[i].claims]
        if not claiming or budgets is None:
            break
        granted = await budgets.claim([(v.id, decided[i].claims) for i, v in claiming])
        pending = [iv for iv, ok in zip(claiming, granted, strict=True) if not ok]
        for i, v in pending:
            ledger.deny(v.id, decided[i].claims)
    return [decided.get(i) for i in range(len(records))]


async def claim_ids(
    ids: HeldIds | None,
    records: list[Any],
    verdicts: list[InputRecord | Invalid],
    decisions: list[Decision | None],
) -> dict[int, tuple[str, Claimed]]:
    """Per record that would write a hold: its content hash and its id claim (ids.py)."""
    reviewed = [
        n for n, d in enumerate(decisions)
        if d is not None and d.route in (Route.HOLD, Route.DELIVER_AND_REVIEW)
    ]  # fmt: skip
    if not reviewed:
        return {}
    if ids is None:
        raise RuntimeError("policies that hold or review need Redis")
    items = []
    for n in reviewed:
        verdict, record = verdicts[n], records[n]
        assert isinstance(verdict, InputRecord)
        where = claim_source(record.topic, record.partition, record.offset)
        items.append((verdict.id, content_hash_of(record.value), where))
    claimed = await ids.claim(items)
    return {n: (item[1], c) for n, item, c in zip(reviewed, items, claimed, strict=True)}
