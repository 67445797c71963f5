"""The SLA schedule: a breach is recorded once; escalation steps fire in order, each once."""

from __future__ import annotations

from hitl_gateway.models import HoldMeta
from hitl_gateway.policy.rules import Escalation
from hitl_gateway.review.sla import next_step

CHAIN = (Escalation(after=3_600, pool="senior"), Escalation(after=60, pool="lead"))
DEADLINE = 1_000_000


def _held(**fields: object) -> HoldMeta:
    return HoldMeta.of(
        {"item_id": "i", "domain": "d", "pool": "p", "reviewers": 1, "content_hash": "h",
         "held_at_ms": 0, **fields}
    )  # fmt: skip


def test_nothing_before_the_deadline() -> None:
    assert next_step(_held(sla_deadline_ms=DEADLINE), CHAIN, DEADLINE - 1) is None


def test_breach_then_escalations_in_order_of_delay() -> None:
    meta = _held(sla_deadline_ms=DEADLINE)
    at_deadline = next_step(meta, CHAIN, DEADLINE)
    assert at_deadline is not None
    assert (at_deadline.breach, at_deadline.escalation) == (True, None)
    assert at_deadline.next_check_ms == DEADLINE + 60_000  # the shortest step comes first
    meta.sla_breached = True
    assert next_step(meta, CHAIN, DEADLINE + 59_999) is None
    first = next_step(meta, CHAIN, DEADLINE + 60_000)
    assert first is not None
    assert first.escalation is not None
    assert (first.breach, first.escalation.pool) == (False, "lead")
    assert first.next_check_ms == DEADLINE + 3_600_000
    meta.escalations = 1
    second = next_step(meta, CHAIN, DEADLINE + 3_600_000)
    assert second is not None
    assert second.escalation is not None
    assert (second.escalation.pool, second.next_check_ms) == ("senior", 0)
    meta.escalations = 2
    assert next_step(meta, CHAIN, DEADLINE + 10**9) is None


def test_without_a_chain_only_the_breach_is_recorded() -> None:
    step = next_step(_held(sla_deadline_ms=DEADLINE), (), DEADLINE + 5)
    assert step is not None
    assert (step.breach, step.escalation, step.next_check_ms) == (True, None, 0)


def test_a_warning_at_its_share_of_the_sla_once_then_the_deadline() -> None:
    meta = _held(sla_deadline_ms=DEADLINE)
    assert next_step(meta, CHAIN, DEADLINE * 3 // 4 - 1, warn_share=0.75) is None
    warning = next_step(meta, CHAIN, DEADLINE * 3 // 4, warn_share=0.75)
    assert warning is not None
    assert (warning.warning, warning.breach, warning.escalation) == (True, False, None)
    assert warning.next_check_ms == DEADLINE
    meta.sla_warned = True
    assert next_step(meta, CHAIN, DEADLINE - 1, warn_share=0.75) is None
    assert next_step(meta, CHAIN, DEADLINE, warn_share=0.75) is not None  # then the breach
    # Warnings off (share 0), or a hold first seen past its deadline: no warning.
    assert next_step(_held(sla_deadline_ms=DEADLINE), CHAIN, DEADLINE - 1) is None
    late = next_step(_held(sla_deadline_ms=DEADLINE), CHAIN, DEADLINE, warn_share=0.75)
    assert late is not None
    assert (late.warning, late.breach) == (False, True)
