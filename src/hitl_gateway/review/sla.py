"""SLA sweeper: holds nearing their deadline are warned about, holds past it escalate along
their rule's chain (or routing.yaml's default chain for holds that block delivery).

Run by each instance for the partitions it owns (the owner of holds partition p is the only
writer of p). A warning (at ``HITL_NOTIFY__SLA_WARNING_SHARE`` of the SLA) and a breach are
recorded once (hold update, audit event, metric); each escalation step moves the hold to the
step's pool (hold update, review task for that pool, audit event). Warnings and steps with
``alert: true`` notify the webhook once the transaction has committed, at most once per item
and step. The same loop runs the re-router (reroute.py). Nothing here releases a hold: only
a reviewer's decision does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from dataclasses import dataclass, field

import structlog
from prometheus_client import Counter

from hitl_gateway.audit import AuditChain
from hitl_gateway.commit import IndexFollowError
from hitl_gateway.errors import InfrastructureError
from hitl_gateway.holds import HoldIndex
from hitl_gateway.index_entries import IndexedHold
from hitl_gateway.metrics import GatewayMetrics
from hitl_gateway.models import HoldMeta
from hitl_gateway.notify import Kind, Notification, Notifier
from hitl_gateway.outputs import audit_event, hold_record
from hitl_gateway.policy.rules import Escalation
from hitl_gateway.policy.store import PolicyStore
from hitl_gateway.review.moves import hold_event, move
from hitl_gateway.review.reroute import PartitionWriter, Rerouter
from hitl_gateway.settings import TopicSettings
from hitl_gateway.sink import Outgoing

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Step:
    """What is due for one hold now."""

    breach: bool  # first time past the deadline
    escalation: Escalation | None
    next_check_ms: int  # 0: nothing further to check
    warning: bool = False  # the SLA's warning share was reached (before the deadline)


def next_step(
    meta: HoldMeta, chain: tuple[Escalation, ...], now_ms: int, warn_share: float = 0.0
) -> Step | None:
    """Pure: given a hold's state and its escalation chain, what happens at ``now_ms``."""
    deadline = meta.sla_deadline_ms
    if not deadline:
        return None
    if now_ms < deadline:
        warn_at = meta.held_at_ms + int((deadline - meta.held_at_ms) * warn_share)
        if warn_share > 0 and not meta.sla_warned and now_ms >= warn_at:
            return Step(breach=False, escalation=None, next_check_ms=deadline, warning=True)
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


@dataclass(slots=True)
class _Done:
    """What a sweep of one partition recorded: metrics and alerts, for after its commit."""

    counts: list[tuple[Counter, str]] = field(default_factory=list)
    alerts: list[Notification] = field(default_factory=list)


class SlaSweeper:
    def __init__(
        self,
        topics: TopicSettings,
        index: HoldIndex,
        policies: PolicyStore,
        metrics: GatewayMetrics,
        interval_s: float,
        *,
        notifier: Notifier | None = None,
        warn_share: float = 0.0,
    ) -> None:
        self._topics = topics
        self._index = index
        self._policies = policies
        self._metrics = metrics
        self._interval_s = interval_s
        self._notifier = notifier
        self._warn_share = warn_share
        self._rerouter = Rerouter(topics, index, policies, metrics)

    async def run(self, writer: PartitionWriter, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval_s)
            if stop.is_set():
                return
            try:
                await self.sweep(writer, int(time.time() * 1000))
                await self._rerouter.run(writer, int(time.time() * 1000))
            except InfrastructureError as exc:
                log.warning("sla_sweep_failed", error=str(exc))

    async def sweep(self, writer: PartitionWriter, now_ms: int) -> int:
        """Warn about and escalate what is due in every owned partition; returns the holds
        changed. Notifications go out once the partition's transaction has committed."""
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
                done = _Done()
                for item_id in due:
                    held = await self._index.get(item_id)
                    if held is None or held.partition != p:
                        continue
                    outgoing += self._step(held, writer.chain(p), now_ms, done)
                if not outgoing:
                    continue
                try:
                    await writer.publish(p, outgoing)
                except IndexFollowError:  # committed; only the index lags: they happened
                    self._committed(done)
                    raise
                self._committed(done)
                changed += sum(1 for o in outgoing if o.topic == self._topics.holds)
        if changed:
            log.info("sla_sweep", holds_changed=changed)
        return changed

    def _committed(self, done: _Done) -> None:
        """Count and announce what a committed sweep recorded (never what was rolled back)."""
        for counter, pool in done.counts:
            counter.labels(pool=pool).inc()
        for alert in done.alerts:
            if self._notifier is not None:
                self._notifier.notify(alert)

    def _step(
        self, held: IndexedHold, chain: AuditChain, now_ms: int, done: _Done
    ) -> list[Outgoing]:
        meta = dataclasses.replace(held.meta)  # a copy: the held item changes only by commit
        steps = self._policies.current.escalation(meta.domain, meta.rule, blocking=meta.blocking)
        step = next_step(meta, steps, now_ms, self._warn_share)
        if step is None:
            return []
        p = held.partition
        out: list[Outgoing] = []
        events = []
        if step.warning:
            meta.sla_warned = True
            done.counts.append((self._metrics.sla_warnings, meta.pool))
            events.append({"type": "sla_warning", "pool": meta.pool, "blocking": meta.blocking})
            left_s = ((meta.sla_deadline_ms or now_ms) - now_ms) / 1000
            text = f"{meta.item_id} ({meta.domain}) waits in {meta.pool}: its SLA ends in"
            text += f" {_duration(left_s)}"
            alert = _alert(meta, "sla_warning", "sla-warning", None, now_ms=now_ms, message=text)
            done.alerts.append(alert)
        if step.breach:
            meta.sla_breached = True
            done.counts.append((self._metrics.sla_breaches, meta.pool))
            events.append({"type": "sla_breached", "pool": meta.pool, "blocking": meta.blocking})
        meta.next_check_ms = step.next_check_ms
        if step.escalation is not None:
            meta.escalations = meta.escalations + 1
        for event in events:  # sealed first: the breach comes before the step it causes
            sealed = hold_event(meta, event, now_ms)
            out.append(audit_event(self._topics.audit, chain, sealed, meta.item_id, partition=p))
        if step.escalation is None:
            hold = hold_record(self._topics.holds, meta, held.value, held.key, held.headers,
                               partition=p)  # fmt: skip
            return [hold, *out]
        previous = meta.pool
        target = step.escalation.pool
        done.counts.append((self._metrics.escalations, target))
        detail = f"past the SLA: moved from {previous} (step {meta.escalations})"
        event = {"alert": step.escalation.alert, "step": meta.escalations}
        out += move(self._topics, held, meta, to_pool=target, kind="escalated", detail=detail,
                    event=event, now_ms=now_ms, chain=chain)  # fmt: skip
        if step.escalation.alert:
            text = f"{meta.item_id} ({meta.domain}) is past its SLA: escalated from {previous}"
            text += f" to {target} (step {meta.escalations})"
            key = f"escalation-{meta.escalations}"
            alert = _alert(meta, "escalation", key, previous, now_ms=now_ms, message=text)
            done.alerts.append(alert)
        return out


def _alert(
    meta: HoldMeta, kind: Kind, step: str, from_pool: str | None, *, now_ms: int, message: str
) -> Notification:
    return Notification(
        key=f"{meta.item_id}|{step}",
        kind=kind,
        item_id=meta.item_id,
        domain=meta.domain,
        pool=meta.pool,
        from_pool=from_pool,
        step=meta.escalations if kind == "escalation" else None,
        sla_deadline_ms=meta.sla_deadline_ms or 0,
        at_ms=now_ms,
        message=message,
    )


def _duration(seconds: float) -> str:
    if seconds >= 3_600:
        return f"{seconds / 3_600:.1f} h"
    if seconds >= 60:
        return f"{round(seconds / 60)} min"
    return f"{max(0, round(seconds))} s"
