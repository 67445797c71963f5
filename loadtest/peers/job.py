"""The gateway's job for the peer benchmarks (Quix Streams, Faust): one consumed record ->
the records the gateway would write for it, built with the gateway's own codec, pure policy
engine and output builders.

What a peer writes: delivered records, holds, review tasks (gold items too) and dead
letters, with the gateway's headers. What it leaves out, and the gateway does: the audit
chain, the Redis hold index, budget slots and id claims shared through Redis (a peer keeps
its budgets in process memory, as one instance would), the stop switch and decisions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from hitl_gateway import __version__, headers
from hitl_gateway.codec import decode
from hitl_gateway.models import DeadLetterReason, InputRecord, Invalid, Route
from hitl_gateway.outputs import Seen, dead_letter, hold_meta, hold_record, review_task
from hitl_gateway.policy.budget import MemoryLedger
from hitl_gateway.policy.engine import Decision, decide
from hitl_gateway.policy.loader import load_policy_set
from hitl_gateway.settings import LimitSettings, NotifySettings
from hitl_gateway.sink import Outgoing

ROOT = Path(__file__).resolve().parents[2]
# The output topics a peer writes, by the gateway's setting names.
KINDS = ("delivered", "holds", "review_tasks", "deadletter")
_ROUTE_BYTES = {route: route.value.encode() for route in Route}


@dataclass(slots=True)
class Consumed:
    """The fields of a consumed record the gateway's builders read."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


class Job:
    """Routes one record at a time; ``topics`` maps each of ``KINDS`` to a topic name."""

    def __init__(self, topics: dict[str, str], policy_dir: Path | None = None) -> None:
        policy_dir = policy_dir or ROOT / "configs" / "policies"
        self.policies = load_policy_set(policy_dir)
        self.topics = topics
        self.limits = LimitSettings()
        self.ledger = MemoryLedger()
        self.version = __version__.encode()
        self.warn_share = NotifySettings().sla_warning_share

    def route(self, record: Consumed) -> list[Outgoing]:
        limits = self.limits
        verdict = decode(
            record.value, max_bytes=limits.max_record_bytes, max_id_length=limits.max_id_length
        )
        if isinstance(verdict, Invalid):
            return [self._dead_letter(record, verdict.reason, verdict.message)]
        d = decide(verdict, self.policies, timestamp_ms=record.timestamp, budgets=self.ledger)
        self.ledger.apply(verdict.id, d.claims)
        if d.route is Route.DEADLETTER:
            reason = DeadLetterReason.UNKNOWN_DOMAIN
            return [self._dead_letter(record, reason, d.reasons[0].detail)]
        base = [
            *headers.original_headers(record),
            (headers.ROUTE, _ROUTE_BYTES[d.route]),
            (headers.RULE, d.rule.encode()),
            (headers.POLICY_VERSION, d.policy_version.encode()),
            *headers.source_headers(record),
            (headers.GATEWAY_VERSION, self.version),
        ]
        out: list[Outgoing] = []
        if d.route in (Route.PASS, Route.DELIVER_AND_REVIEW):
            delivered = self.topics["delivered"]
            out.append(
                Outgoing(delivered, record.value, record.key, base,
                         partition=record.partition, timestamp_ms=record.timestamp)
            )  # fmt: skip
        if d.route in (Route.HOLD, Route.DELIVER_AND_REVIEW):
            assert record.value is not None
            out += self._held(
                record, item=verdict, d=d, value=record.value, key=record.key, base=base
            )
            if d.gold is not None:
                out += self._gold(record, verdict, d, base)
        return out

    def _held(
        self,
        record: Consumed,
        *,
        item: InputRecord,
        d: Decision,
        value: bytes,
        key: bytes | None,
        base: list[tuple[str, bytes]],
    ) -> list[Outgoing]:
        seen = Seen.of(record, value, d)
        meta = hold_meta(record, item, d, seen, self.warn_share)
        return list(self._hold_and_task(record, meta=meta, d=d, value=value, key=key, base=base))

    def _hold_and_task(
        self,
        record: Consumed,
        *,
        meta: Any,
        d: Decision,
        value: bytes,
        key: bytes | None,
        base: list[tuple[str, bytes]],
    ) -> tuple[Outgoing, Outgoing]:
        hold = hold_record(self.topics["holds"], meta, value, key, base,
                           partition=record.partition)  # fmt: skip
        task_headers = [(headers.POLICY_VERSION, d.policy_version.encode()),
                        (headers.GATEWAY_VERSION, self.version)]  # fmt: skip
        task = review_task(self.topics["review_tasks"], meta, value, rule=d.rule,
                           reasons=meta.reasons, created_at_ms=record.timestamp,
                           task_headers=task_headers, strict=True)  # fmt: skip
        return hold, task

    def _gold(
        self, record: Consumed, item: InputRecord, d: Decision, base: list[tuple[str, bytes]]
    ) -> list[Outgoing]:
        """A known-answer item beside the real one, as the gateway's router builds it."""
        gold = d.gold
        assert gold is not None
        gold_id = "r" + hashlib.sha256(f"gold|{gold.id}|{item.id}".encode()).hexdigest()[:31]
        body = {k: v for k, v in gold.record.items() if k != "judge"} | {"id": gold_id}
        value = orjson.dumps(body)
        shown = d._replace(blind=True, gold=None, adjudicator_pool=None, reviewers=1)
        meta = hold_meta(record, InputRecord.model_validate(body), shown,
                         Seen.of(record, value, shown))  # fmt: skip
        meta.gold = {"id": gold.id, "verdict": gold.verdict, "grade": gold.grade}
        return list(
            self._hold_and_task(record, meta=meta, d=shown, value=value, key=None, base=base)
        )

    def _dead_letter(self, record: Consumed, reason: DeadLetterReason, message: str) -> Outgoing:
        return dead_letter(self.topics["deadletter"], record, reason.value, message,
                           policy_set_version=self.policies.version,
                           gateway_version=self.version,
                           max_wire_bytes=self.limits.max_wire_bytes)  # fmt: skip
