"""Stage 2: one partition's records -> decisions -> the records they produce.

decode (codec) -> decide (pure engine, budgets read in one round trip) -> claim budget slots
atomically -> build outputs: delivered, hold, review task, audit event, dead letter.
Holds and audit events go to the input partition's number, so the owner of an input
partition is the only writer of its holds and audit partitions.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from hitl_gateway import __version__, headers
from hitl_gateway.audit import AuditChain
from hitl_gateway.budgets import RedisBudgets
from hitl_gateway.codec import decode
from hitl_gateway.deciding import claim_ids, decide_all
from hitl_gateway.ids import Claim, Claimed, HeldIds
from hitl_gateway.models import DeadLetterReason, HoldMeta, InputRecord, Invalid, Route
from hitl_gateway.outputs import (
    Seen,
    audit_event,
    dead_letter,
    hold_meta,
    hold_record,
    input_weight,
    oversized,
    review_task,
    routed_event,
    source_of,
    wire_size,
)
from hitl_gateway.poison import poisoned
from hitl_gateway.policy.engine import Decision
from hitl_gateway.policy.loader import PolicySet
from hitl_gateway.settings import Settings
from hitl_gateway.sink import Outgoing
from hitl_gateway.stopswitch import SwitchEvent

# Header values per route, encoded once (an enum's ``.value`` is a Python-level descriptor).
_ROUTE_BYTES = {route: route.value.encode() for route in Route}

log = structlog.get_logger(__name__)

# The route label of a record acknowledged as a retry of an item already held.
DUPLICATE = "duplicate"

# Records routed between two yields to the event loop: other partitions' commit round trips
# advance while this one routes (one batch is tens of milliseconds of CPU).
YIELD_EVERY = 128


@dataclass(slots=True)
class Tally:
    """What one partition batch did; applied to metrics only after its commit succeeds."""

    routes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (domain, route)
    dead_letters: Counter[str] = field(default_factory=Counter)
    delivered: int = 0
    delivered_at_ms: list[int] = field(default_factory=list)  # input timestamps, for latency
    review_tasks: Counter[str] = field(default_factory=Counter)  # by pool
    fallbacks: Counter[tuple[str, str]] = field(default_factory=Counter)  # (domain, pool)

    def add(self, other: Tally) -> None:
        """Count ``other`` in too (a transaction's chunks, each routed on its own)."""
        self.routes.update(other.routes)
        self.dead_letters.update(other.dead_letters)
        self.delivered += other.delivered
        self.delivered_at_ms += other.delivered_at_ms
        self.review_tasks.update(other.review_tasks)
        self.fallbacks.update(other.fallbacks)


class Router:
    def __init__(
        self, settings: Settings, budgets: RedisBudgets | None, ids: HeldIds | None
    ) -> None:
        self._settings = settings
        self._topics = settings.topics
        self._budgets = budgets
        self._ids = ids
        self._version = __version__.encode()
        self._version_header = (headers.GATEWAY_VERSION, self._version)
        # Header templates, encoded once per (route, rule, policy version) and per policy
        # version instead of once per record: a record's outputs differ only in its own
        # headers and its offset. Bounded by the policies' rules (a reload adds its own).
        self._routed: dict[tuple[Route, str, str], tuple[tuple[str, bytes], ...]] = {}
        self._by_version: dict[str, tuple[tuple[str, bytes], ...]] = {}
        self._warn_share = settings.notify.sla_warning_share
        # An input this light (value and headers) cannot produce a record the topics refuse:
        # a hold repeats it about twice over (its metadata names the producing service), a
        # blind task re-encodes it (numbers such as 1E15 grow to at most 4.5 times), each
        # with a few KB of the gateway's own fields.
        self._light_bytes = settings.limits.max_wire_bytes // 5 - 16 * 1024

    async def route(
        self,
        records: list[Any],
        policies: PolicySet,
        chain: AuditChain,
        switches: list[SwitchEvent] | None = None,
    ) -> tuple[list[Outgoing], Tally]:
        """``switches``: the partition's stop switch events (held in its lane)."""
        limits = self._settings.limits
        tally = Tally()
        verdicts: list[InputRecord | Invalid] = []
        for start in range(0, len(records), YIELD_EVERY):
            if start:
                await asyncio.sleep(0)
            # A header name that is not UTF-8, or an unreadable batch's stand-in: a dead letter.
            verdicts += [
                poisoned(r)
                or decode(
                    r.value, max_bytes=limits.max_record_bytes, max_id_length=limits.max_id_length
                )
                for r in records[start : start + YIELD_EVERY]
            ]
        decisions = await decide_all(self._budgets, records, verdicts, policies, switches)
        claims = await claim_ids(self._ids, records, verdicts, decisions)
        out: list[Outgoing] = []
        for n, (record, verdict, decision) in enumerate(
            zip(records, verdicts, decisions, strict=True)
        ):
            if n and not n % YIELD_EVERY:
                await asyncio.sleep(0)
            if isinstance(verdict, Invalid):
                out.append(
                    self._dead_letter(record, verdict.reason, verdict.message, policies.version)
                )
                tally.dead_letters[verdict.reason] += 1
                tally.routes[("-", Route.DEADLETTER)] += 1
                continue
            assert decision is not None
            if decision.route is Route.DEADLETTER:
                message = decision.reasons[0].detail
                reason = DeadLetterReason.UNKNOWN_DOMAIN
                out.append(self._dead_letter(record, reason, message, policies.version))
                tally.dead_letters[DeadLetterReason.UNKNOWN_DOMAIN] += 1
                tally.routes[("-", Route.DEADLETTER)] += 1
                continue
            claimed = claims.get(n)
            if claimed is not None and not claimed[1].holds:
                out += self._not_held_again(record, verdict, claimed[1], policies, tally)
                continue
            content_hash = claimed[0] if claimed is not None else None
            mark = chain.pending
            produced = self._outputs(
                record, verdict, decision, policies, chain, content_hash=content_hash
            )
            big = (
                oversized(produced, self._settings.limits.max_wire_bytes)
                if input_weight(record) > self._light_bytes
                else None  # what it produces cannot reach the limit: nothing to measure
            )
            if big is not None:  # its hold or task would carry more than the topic takes
                chain.rewind(mark)
                message = (
                    f"its {big.topic} record would be {wire_size(big)} bytes, over the topics'"
                    f" limit of {self._settings.limits.max_wire_bytes}"
                )
                reason = DeadLetterReason.TOO_LARGE
                out.append(self._dead_letter(record, reason, message, policies.version))
                tally.dead_letters[reason] += 1
                tally.routes[("-", Route.DEADLETTER)] += 1
                continue
            out += produced
            tally.routes[(decision.domain, decision.route)] += 1
            if decision.route in (Route.PASS, Route.DELIVER_AND_REVIEW):
                tally.delivered += 1
                tally.delivered_at_ms.append(record.timestamp)
            if decision.route in (Route.HOLD, Route.DELIVER_AND_REVIEW):
                tally.review_tasks[decision.pool or "-"] += 1
                if decision.fallback:
                    tally.fallbacks[(decision.domain, decision.pool or "-")] += 1
        return out, tally

    def _not_held_again(
        self, record: Any, item: InputRecord, claimed: Claimed, policies: PolicySet, tally: Tally
    ) -> list[Outgoing]:
        """A record whose id another record holds: a retry of the same content is acknowledged
        once (counted, nothing written again); other content under that id is a conflict,
        dead-lettered naming the record that holds the id."""
        if claimed.status is Claim.DUPLICATE:
            tally.routes[("-", DUPLICATE)] += 1
            log.info("duplicate_acknowledged", item_id=item.id, first=claimed.holder,
                     **source_of(record))  # fmt: skip
            return []
        message = (
            f"id {item.id!r} is already held with other content (first held from"
            f" {claimed.holder}): ids are idempotency keys"
        )
        reason = DeadLetterReason.DUPLICATE_ID
        tally.dead_letters[reason] += 1
        tally.routes[("-", Route.DEADLETTER)] += 1
        return [self._dead_letter(record, reason, message, policies.version)]

    # -- output records ---------------------------------------------------------------------

    def _outputs(
        self,
        record: Any,
        item: InputRecord,
        decision: Decision,
        policies: PolicySet,
        chain: AuditChain,
        *,
        content_hash: str | None = None,
    ) -> list[Outgoing]:
        base = headers.original_headers(record) if record.headers else []
        base += self._routed_headers(decision)
        base += headers.source_headers(record)
        base.append(self._version_header)
        out: list[Outgoing] = []
        if decision.route in (Route.PASS, Route.DELIVER_AND_REVIEW):
            # Released as produced: the producer's bytes, key and timestamp, on the input's
            # partition number (the data topics are co-partitioned), so order is kept.
            out.append(
                Outgoing(self._topics.delivered, record.value, record.key, base,
                         partition=record.partition, timestamp_ms=record.timestamp)
            )  # fmt: skip
        reviewed = decision.route in (Route.HOLD, Route.DELIVER_AND_REVIEW)
        if not (reviewed or decision.audit):
            return out
        # Shared by the hold, its review task and the audit event (built once per record).
        seen = Seen.of(record, record.value, decision, content_hash)
        if reviewed:
            # Held items, and deliver-and-review items as non-blocking reviews: both wait on
            # the holds topic for a reviewer (the latter already delivered, never blocked).
            hold = hold_meta(record, item, decision, seen, self._warn_share)
            holds = self._topics.holds
            out.append(
                hold_record(holds, hold, record.value, record.key, base, partition=record.partition)
            )
            out.append(self._task(record, hold, decision))
        if reviewed and decision.gold is not None:
            out += self._gold(record, item, decision, base)
        if decision.audit:
            out.append(self._audit(record, item, decision, policies, seen, chain=chain))
        return out

    def _routed_headers(self, d: Decision) -> tuple[tuple[str, bytes], ...]:
        """Route, rule and policy version headers (in this order) for decision ``d``."""
        key = (d.route, d.reasons[0].rule, d.policy_version)
        fixed = self._routed.get(key)
        if fixed is None:
            fixed = self._routed[key] = (
                (headers.ROUTE, _ROUTE_BYTES[d.route]),
                (headers.RULE, key[1].encode()),
                (headers.POLICY_VERSION, d.policy_version.encode()),
            )
        return fixed

    def _version_headers(self, policy_version: str) -> tuple[tuple[str, bytes], ...]:
        """Policy version and gateway version headers (review tasks; the first, audit)."""
        fixed = self._by_version.get(policy_version)
        if fixed is None:
            pv = (headers.POLICY_VERSION, policy_version.encode())
            fixed = self._by_version[policy_version] = (pv, self._version_header)
        return fixed

    def _gold(
        self, record: Any, item: InputRecord, d: Decision, base: list[tuple[str, bytes]]
    ) -> list[Outgoing]:
        """A known-answer item for the same pool, indistinguishable in the queue: an opaque
        id, the real item's reasons, no judge grade. Never delivered; it measures the
        reviewer who decides it."""
        gold = d.gold
        assert gold is not None
        gold_id = "r" + hashlib.sha256(f"gold|{gold.id}|{item.id}".encode()).hexdigest()[:31]
        body = {k: v for k, v in gold.record.items() if k != "judge"} | {"id": gold_id}
        value = orjson.dumps(body)
        gold_item = InputRecord.model_validate(body)
        shown = d._replace(blind=True, gold=None, adjudicator_pool=None, reviewers=1)
        seen = Seen.of(record, value, shown)
        meta = hold_meta(record, gold_item, shown, seen)
        meta.gold = {"id": gold.id, "verdict": gold.verdict, "grade": gold.grade}
        hold = hold_record(self._topics.holds, meta, value, None, base, partition=record.partition)
        return [hold, self._task(record, meta, shown, value)]

    def _task(
        self, record: Any, meta: HoldMeta, d: Decision, value: bytes | None = None
    ) -> Outgoing:
        task_headers = self._version_headers(d.policy_version)
        return review_task(
            self._topics.review_tasks,
            meta,
            record.value if value is None else value,
            rule=d.rule,
            reasons=meta.reasons,
            created_at_ms=record.timestamp,
            task_headers=task_headers,
            strict=True,  # routed records are strict JSON (codec.py)
        )

    def _audit(
        self,
        record: Any,
        item: InputRecord,
        d: Decision,
        policies: PolicySet,
        seen: Seen,
        *,
        chain: AuditChain,
    ) -> Outgoing:
        event = routed_event(record, item, d, policies.version, seen)
        policy_header = self._version_headers(d.policy_version)[:1]
        return audit_event(
            self._topics.audit, chain, event, item.id, partition=record.partition,
            event_headers=policy_header,
        )  # fmt: skip

    def _dead_letter(
        self, record: Any, reason: DeadLetterReason, message: str, policy_set_version: str
    ) -> Outgoing:
        return dead_letter(
            self._topics.deadletter,
            record,
            reason.value,
            message,
            policy_set_version=policy_set_version,
            gateway_version=self._version,
            max_wire_bytes=self._settings.limits.max_wire_bytes,
        )
