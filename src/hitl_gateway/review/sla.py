"""SLA sweeper: holds past their deadline are escalated along the policy's chain.

Run by each instance for the partitions it owns (the owner of holds partition p is the only
writer of p). A breach is recorded once (audit event, metric); each escalation step moves
the hold to the step's pool (hold update, review task for that pool, audit event). Nothing
here releases a hold: only a reviewer's decision does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from dataclasses import dataclass
from typing import Protocol

import structlog

from hitl_gateway import __version__
from hitl_gateway.audit import AuditChain
from hitl_gateway.errors import InfrastructureError
from hitl_gateway.holds import HoldIndex
from hitl_gateway.index_entries import IndexedHold
from hitl_gateway.metrics import GatewayMetrics
from hitl_gateway.models import HoldMeta
from hitl_gateway.outputs import audit_event, hold_record, review_task
from hitl_gateway.policy.schema import Escalation
from hitl_gateway.policy.store import PolicyStore
from hitl_gateway.settings import TopicSettings
from hitl_gateway.sink import Outgoing

log = structlog.get_logger(__name__)


class PartitionWriter(Protocol):
    """What the sweeper needs from the pipeline: owned partitions and their transactions."""

    @property
    def owned_partitions(self) -> set[int]: ...

    def partition_lock(self, partition: int) -> asyncio.Lock | None: ...

    def chain(self, partition: int) -> AuditChain: ...

    async def publish(self, partition: int, outgoing: list[Outgoing]) -> None: ...


@dataclass(frozen=True, slots=True)
class Step:
    """What is due for one hold now."""

    breach: bool  # first time past the deadline
    escalation: Escalation | None
    next_check_ms: int  # 0: nothing further to check


def next_step(meta: HoldMeta, chain: tuple[Escalation, ...], now_ms: int) -> Step | None:
    """Pure: given a hold's state and its policy's chain, what happens at ``now_ms``."""
    deadline = meta.sla_deadline_ms
    if not deadline or now_ms < deadline:
        return None
    level = meta.escalations
    breach = not meta.sla_breached
    steps = sorted(chain, key=lambda e: e.after)
    escalation = None
    if level < len(steps) and now_ms >= deadline + steps[level].after * 1000:
        escalation = steps[level]
        level += 1
    if not breach and escalation is None:
        return None
    following = deadline + int(steps[level].after * 1000) if level < len(steps) else 0
    return Step(breach=breach, escalation=escalation, next_check_ms=following)


class SlaSweeper:
    def __init__(
        self,
        topics: TopicSettings,
        index: HoldIndex,
        policies: PolicyStore,
        metrics: GatewayMetrics,
        interval_s: float,
    ) -> None:
        self._topics = topics
        self._index = index
        self._policies = policies
        self._metrics = metrics
        self._interval_s = interval_s

    async def run(self, writer: PartitionWriter, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval_s)
            if stop.is_set():
                return
            try:
                await self.sweep(writer, int(time.time() * 1000))
            except InfrastructureError as exc:
                log.warning("sla_sweep_failed", error=str(exc))

    async def sweep(self, writer: PartitionWriter, now_ms: int) -> int:
        """Escalate what is due in every owned partition; returns the holds changed."""
        changed = 0
        for p in sorted(writer.owned_partitions):
            due = await self._index.due(p, now_ms)
            if not due:
                continue
            lock = writer.partition_lock(p)
            if lock is None:
                continue
            async with lock:
                if writer.partition_lock(p) is not lock:  # released meanwhile
                    continue
                outgoing: list[Outgoing] = []
                for item_id in due:
                    held = await self._index.get(item_id)
                    if held is None or held.partition != p:
                        continue
                    outgoing += self._step(held, writer.chain(p), now_ms, p)
                if outgoing:
                    await writer.publish(p, outgoing)
                    changed += sum(1 for o in outgoing if o.topic == self._topics.holds)
        if changed:
            log.info("sla_sweep", holds_changed=changed)
        return changed

    def _step(self, held: IndexedHold, chain: AuditChain, now_ms: int, p: int) -> list[Outgoing]:
        meta = dataclasses.replace(held.meta)  # a copy: the held item changes only by commit
        loaded = self._policies.current.policies.get(meta.domain)
        mandatory = loaded.policy.mandatory_review if loaded else None
        blocking = meta.blocking
        steps = mandatory.escalation if mandatory and blocking else ()
        step = next_step(meta, steps, now_ms)
        if step is None:
            return []
        out: list[Outgoing] = []
        events = []
        if step.breach:
            meta.sla_breached = True
            self._metrics.sla_breaches.labels(pool=meta.pool).inc()
            events.append({"type": "sla_breached", "pool": meta.pool, "blocking": blocking})
        if step.escalation is not None:
            previous = meta.pool
            meta.pool = step.escalation.pool
            meta.escalations = meta.escalations + 1
            self._metrics.escalations.labels(pool=step.escalation.pool).inc()
            events.append(
                {"type": "escalated", "pool": step.escalation.pool, "from_pool": previous,
                 "alert": step.escalation.alert}
            )  # fmt: skip
            detail = f"past the SLA: moved from {previous}"
            reasons = [{"rule": "escalation", "detail": detail}]
            out.append(
                review_task(self._topics.review_tasks, meta, held.value, rule="escalation",
                            reasons=reasons, created_at_ms=now_ms)
            )  # fmt: skip
        meta.next_check_ms = step.next_check_ms
        out.append(
            hold_record(self._topics.holds, meta, held.value, held.key, held.headers, partition=p)
        )
        for event in events:
            full = {
                **event,
                "item_id": meta.item_id,
                "domain": meta.domain,
                "sla_deadline_ms": meta.sla_deadline_ms,
                "content_hash": meta.content_hash,
                "policy_version": meta.policy_version,
                "at_ms": now_ms,
                "gateway_version": __version__,
            }
            out.append(audit_event(self._topics.audit, chain, full, meta.item_id, partition=p))
        return out
