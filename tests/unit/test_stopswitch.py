"""The stop switch's pure rules: which event applies to a record by its offset, and how it
turns a decision into a hold."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from hitl_gateway.deciding import decide_all
from hitl_gateway.index_entries import index_changes, switch_changes
from hitl_gateway.models import InputRecord, Invalid, Route
from hitl_gateway.policy.engine import Decision, Reason
from hitl_gateway.policy.loader import load_policy_set
from hitl_gateway.stopswitch import (
    ALL,
    DEFAULT_SLA_S,
    RULE,
    SWITCH_HEADER,
    SwitchEvent,
    active,
    merged,
    override,
    state,
)

PASSTHROUGH = Path(__file__).resolve().parents[1] / "fixtures" / "passthrough"


def _event(domain: str, on: bool, at: int, **fields: object) -> SwitchEvent:
    return SwitchEvent.model_validate(
        {"domain": domain, "on": on, "effective_offset": at, "request_id": f"r{at}",
         "operator": "op", "reason": "why", "pool": "safety" if on else None, **fields}
    )  # fmt: skip


def _decision(route: Route, **fields: object) -> Decision:
    base = Decision(
        domain="chat", route=route, reasons=(Reason("ok", "fine"),), policy_version="v1",
        pool="general" if route is not Route.PASS else None, claims=(("k", 1),), audit=False,  # type: ignore[arg-type]
    )  # fmt: skip
    return base._replace(**fields)


def test_applies_from_its_effective_offset_on() -> None:
    events = [_event("chat", True, 10)]
    assert active(events, "chat", 9) is None
    assert active(events, "chat", 10) == events[0]
    assert active(events, "chat", 10_000) == events[0]


def test_on_off_history_by_offset() -> None:
    events = [_event("chat", True, 10), _event("chat", False, 20), _event("chat", True, 30)]
    assert [active(events, "chat", o) is not None for o in (9, 10, 19, 20, 29, 30, 99)] == [
        False, True, True, False, False, True, True,
    ]  # fmt: skip
    assert active(events, "chat", 35) == events[2]


def test_a_domain_switch_leaves_other_domains_alone() -> None:
    events = [_event("chat", True, 0)]
    assert active(events, "search", 5) is None


def test_all_domains_and_a_domain_are_separate_switches() -> None:
    everything = _event(ALL, True, 10)
    chat_off = _event("chat", False, 15)
    assert active([everything], "search", 10) == everything
    # Switching one domain off does not lift the all-domains switch, nor the reverse.
    assert active([everything, chat_off], "chat", 20) == everything
    chat_on = _event("chat", True, 5)
    all_off = _event(ALL, False, 12)
    assert active([chat_on, everything, all_off], "chat", 20) == chat_on
    assert active([chat_on, everything, all_off], "search", 20) is None
    assert active([chat_on, everything, all_off], "search", 11) == everything


def test_merged_replaces_an_event_at_the_same_scope_and_offset() -> None:
    on, off = _event("chat", True, 10), _event("chat", False, 10)
    assert merged([on], [off]) == [off]
    assert state(merged([on], [off])) == {"chat": off}
    assert [e.effective_offset for e in merged([_event("chat", True, 30)], [on])] == [10, 30]


@given(
    st.lists(st.tuples(st.sampled_from(["chat", ALL]), st.booleans(), st.integers(0, 50))),
    st.integers(0, 60),
)
def test_active_is_a_function_of_the_events_not_their_order(
    raw: list[tuple[str, bool, int]], offset: int
) -> None:
    events = merged([], [_event(d, on, at) for d, on, at in raw])
    assert active(events, "chat", offset) == active(list(reversed(events)), "chat", offset)
    found = active(events, "chat", offset)
    if found is not None:
        assert found.on
        assert found.effective_offset <= offset


def test_override_holds_passing_and_delivered_records() -> None:
    switch = _event("chat", True, 0, sla_s=600)
    for route in (Route.PASS, Route.DELIVER_AND_REVIEW):
        held = override(_decision(route), switch, timestamp_ms=1_000)
        assert held.route is Route.HOLD
        assert (held.pool, held.reviewers, held.claims) == ("safety", 1, ())
        assert held.sla_deadline_ms == 1_000 + 600_000
        assert held.rule == RULE
        assert "r0" in held.reasons[0].detail
        assert "op" in held.reasons[0].detail
        assert held.gold is None
        assert held.audit


def test_override_keeps_holds_and_dead_letters() -> None:
    switch = _event("chat", True, 0)
    for route in (Route.HOLD, Route.DEADLETTER):
        decision = _decision(route)
        assert override(decision, switch, timestamp_ms=0) == decision


def test_override_default_sla() -> None:
    held = override(_decision(Route.PASS), _event("chat", True, 0), timestamp_ms=0)
    assert held.sla_deadline_ms == DEFAULT_SLA_S * 1000


def test_switch_records_are_not_holds_for_the_index() -> None:
    e = _event("chat", True, 7)
    records = [(e.key(), e.model_dump_json().encode(), [(SWITCH_HEADER, b"1")])]
    assert index_changes(records, 3) == ([], [])
    assert switch_changes(records) == [e]


async def test_routing_holds_a_switched_domains_records_by_offset() -> None:
    policies = load_policy_set(PASSTHROUGH / "policies", PASSTHROUGH / "pools.yaml", None)
    records = [SimpleNamespace(offset=o, timestamp=0) for o in range(4)]
    verdicts: list[InputRecord | Invalid] = [
        InputRecord.model_validate({"id": f"i{o}", "domain": d, "output": {}})
        for o, d in enumerate(["d", "d", "support-chat", "d"])
    ]
    decided = await decide_all(None, records, verdicts, policies, [_event("d", True, 1)])
    assert [d.route if d else None for d in decided] == [
        Route.PASS, Route.HOLD, Route.PASS, Route.HOLD,
    ]  # fmt: skip


def test_held_items_escalate_along_the_default_chain() -> None:
    configs = PASSTHROUGH.parents[2] / "configs"
    policies = load_policy_set(
        configs / "policies", configs / "pools.yaml", configs / "routing.yaml"
    )
    chain = policies.routing.review_defaults.escalation
    assert chain  # the shipped routing.yaml declares one
    for domain in policies.policies:
        assert policies.escalation(domain, RULE, blocking=True) == chain
