"""Moving a held item to another pool: what the SLA sweeper (escalation), the re-router
(a pool added for a language) and an operator's reassignment all write, in the partition's
transaction: the hold updated, a review task for the new pool, a sealed audit event."""

from __future__ import annotations

from typing import Any

from hitl_gateway import __version__
from hitl_gateway.audit import AuditChain
from hitl_gateway.index_entries import IndexedHold
from hitl_gateway.models import HoldMeta
from hitl_gateway.outputs import audit_event, hold_record, review_task
from hitl_gateway.settings import TopicSettings
from hitl_gateway.sink import Outgoing


def hold_event(meta: HoldMeta, event: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """An audit event about a hold, with the fields every such event carries."""
    return {
        **event,
        "item_id": meta.item_id,
        "domain": meta.domain,
        "sla_deadline_ms": meta.sla_deadline_ms,
        "content_hash": meta.content_hash,
        "policy_version": meta.policy_version,
        "at_ms": now_ms,
        "gateway_version": __version__,
    }


def move(
    topics: TopicSettings,
    held: IndexedHold,
    meta: HoldMeta,
    *,
    to_pool: str,
    kind: str,
    detail: str,
    event: dict[str, Any],
    now_ms: int,
    chain: AuditChain,
) -> list[Outgoing]:
    """``meta`` (a copy of ``held.meta``, already updated otherwise) moved to ``to_pool``:
    a review task there, the hold record, the ``kind`` audit event (with ``event``'s fields)."""
    previous = meta.pool
    meta.pool = to_pool
    p = held.partition
    reasons = [{"rule": kind, "detail": detail}]
    sealed = hold_event(
        meta, {"type": kind, **event, "pool": to_pool, "from_pool": previous, "detail": detail},
        now_ms,
    )  # fmt: skip
    return [
        review_task(topics.review_tasks, meta, held.value, rule=kind, reasons=reasons,
                    created_at_ms=now_ms),
        hold_record(topics.holds, meta, held.value, held.key, held.headers, partition=p),
        audit_event(topics.audit, chain, sealed, meta.item_id, partition=p),
    ]  # fmt: skip
