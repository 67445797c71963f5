"""The stop switch command as the partition's owner applies it: the switch event on the holds
topic (what the index keeps) and its audit event, refusals audited with their reason, a request
id applied once."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import orjson
from aiokafka import TopicPartition

from hitl_gateway.audit import AuditChain
from hitl_gateway.commit import Committer
from hitl_gateway.index_entries import index_changes, switch_changes
from hitl_gateway.policy.loader import PolicySet, load_policy_set
from hitl_gateway.review.auth import Reviewer, Reviewers
from hitl_gateway.review.batch import Applied, Batch
from hitl_gateway.review.stop_switch import COMMAND_HEADERS, Switcher, result_key
from hitl_gateway.settings import Settings, TopicSettings
from hitl_gateway.stopswitch import SWITCH_HEADER

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TOPICS = TopicSettings()


@dataclass
class Command:
    value: bytes
    partition: int = 2
    offset: int = 7
    timestamp: int = 1_795_000_000_000
    key: bytes | None = b"s1"
    headers: tuple[tuple[str, bytes], ...] = tuple(COMMAND_HEADERS)


@dataclass
class FakePolicies:
    current: PolicySet


def _switcher() -> Switcher:
    reviewers = Reviewers((
        Reviewer(id="op", token_sha256="0" * 64, pools=("*",), operator=True),
        Reviewer(id="chat-op", token_sha256="1" * 64, pools=("*",), domains=("support-chat",),
                 operator=True),
        Reviewer(id="ana", token_sha256="2" * 64, pools=("clinicians",)),
    ))  # fmt: skip
    policies = load_policy_set(
        CONFIGS / "policies", CONFIGS / "pools.yaml", CONFIGS / "routing.yaml"
    )
    return Switcher(TOPICS, reviewers, FakePolicies(policies))  # type: ignore[arg-type]


def _apply(body: dict[str, object], **batch: object) -> Applied:
    b = Batch(Applied(), AuditChain(), 2, **batch)  # type: ignore[arg-type]
    b.record = Command(orjson.dumps(body))
    asyncio.run(_switcher().apply(b))
    return b.out


ON = {"request_id": "s1", "operator": "op", "domain": "support-chat", "on": True,
      "pool": "review-leads", "reason": "incident"}  # fmt: skip


def test_on_writes_the_event_from_the_batch_offset_and_audits_it() -> None:
    out = _apply(ON, switch_offset=120)
    event, audit = out.outgoing
    assert (event.topic, event.partition, event.key) == (
        TOPICS.holds,
        2,
        b"\x00switch\x00support-chat\x00120",
    )
    assert dict(event.headers) == {SWITCH_HEADER: b"1"}
    (switch,) = out.switches
    assert (switch.domain, switch.on, switch.effective_offset, switch.pool) == (
        "support-chat", True, 120, "review-leads",
    )  # fmt: skip
    body = orjson.loads(audit.value)
    assert (audit.topic, body["type"], body["operator"], body["effective_offset"]) == (
        TOPICS.audit, "stop_switch_on", "op", 120,
    )  # fmt: skip
    assert out.results[result_key("s1", "op", 2)]["effective_offset"] == 120
    # What the index keeps of it: a switch event, no hold.
    rows = [(event.key, event.value, event.headers)]
    assert index_changes(rows, 2) == ([], [])
    assert switch_changes(rows) == [switch]


def test_a_request_id_is_applied_once() -> None:
    first = _apply(ON, switch_offset=5).switches
    again = _apply(ON, switches=first, switch_offset=9)
    assert (again.outgoing, again.switches, again.results) == ([], [], {})


def test_refusals_are_audited_with_their_reason() -> None:
    cases = {
        "ana": "not an operator",
        "chat-op": "not granted every domain",
    }
    for who, why in cases.items():
        body = {**ON, "operator": who, "domain": "*" if who == "chat-op" else "support-chat"}
        out = _apply(body)
        (audit,) = out.outgoing
        assert orjson.loads(audit.value)["type"] == "stop_switch_refused"
        assert why in orjson.loads(audit.value)["message"]
        assert why in out.results[result_key("s1", who, 2)]["error"]
        assert out.switches == []
    granted = _apply({**ON, "operator": "chat-op"})
    assert [s.domain for s in granted.switches] == ["support-chat"]
    other = _apply({**ON, "operator": "chat-op", "domain": "clinical-summaries"})
    assert (
        "not granted domain 'clinical-summaries'"
        in other.results[result_key("s1", "chat-op", 2)]["error"]
    )
    nowhere = _apply({**ON, "pool": "no-such-pool"})
    assert "not defined" in nowhere.results[result_key("s1", "op", 2)]["error"]


def test_a_malformed_command_is_refused_and_audited() -> None:
    out = _apply({**ON, "pool": None})  # on needs a pool
    (audit,) = out.outgoing
    assert orjson.loads(audit.value)["type"] == "stop_switch_refused"
    assert out.results == {}


def test_off_keeps_no_pool() -> None:
    out = _apply({**ON, "on": False}, switch_offset=3)
    assert [(s.on, s.pool, s.effective_offset) for s in out.switches] == [(False, None, 3)]


def test_switching_on_a_domain_no_policy_names_is_refused_off_is_not() -> None:
    typo = _apply({**ON, "domain": "suport-chat"})
    assert "has no policy" in typo.results[result_key("s1", "op", 2)]["error"]
    assert typo.switches == []
    off = _apply({**ON, "domain": "suport-chat", "on": False})
    assert [s.domain for s in off.switches] == ["suport-chat"]


def test_the_effective_offset_is_the_input_offset_the_transaction_commits() -> None:
    settings = Settings()
    owner = SimpleNamespace(next_offset={})
    committer = Committer(
        settings, None, policies=None, router=None, applier=None, index=None, source=None,
        ownership=owner,
    )  # type: ignore[arg-type]  # fmt: skip
    inputs = TopicPartition(settings.topics.outputs, 2)
    decisions = TopicPartition(settings.topics.review_decisions, 2)
    # Inputs in the batch: after the last of them (they were routed without the switch).
    assert committer._switch_offset(2, {inputs: 57, decisions: 9}) == 57
    # No inputs in the batch: the partition's committed input offset, 0 before any.
    assert committer._switch_offset(2, {decisions: 9}) == 0
    owner.next_offset[inputs] = 40
    assert committer._switch_offset(2, {decisions: 9}) == 40
