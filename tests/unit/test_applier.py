"""The decision applier's outcomes, decision by decision: what a release, an edit, a refusal
and a malformed or poisoned decision write, and where each result is filed. The index and
calibration store are faked; the real ones are tested against Redis in tests/integration."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from hitl_gateway.audit import AuditChain
from hitl_gateway.calibration.store import Change
from hitl_gateway.index_entries import IndexedHold
from hitl_gateway.models import HoldMeta
from hitl_gateway.policy.loader import PolicySet, load_policy_set
from hitl_gateway.policy.schema import Training
from hitl_gateway.review.applier import DecisionApplier
from hitl_gateway.review.auth import Reviewer, Reviewers
from hitl_gateway.review.state import ClosedBy
from hitl_gateway.settings import TopicSettings

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TOPICS = TopicSettings()
HELD = orjson.dumps({"id": "c-1", "domain": "clinical-summaries", "output": {"text": "draft"}})
HASH = "sha256:" + "a" * 64
LIMIT = 10_000


@dataclass
class Consumed:
    value: bytes | None
    topic: str = TOPICS.review_decisions
    partition: int = 1
    offset: int = 40
    timestamp: int = 1_795_000_000_000
    key: bytes | None = b"c-1"
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class FakeIndex:
    holds: dict[str, IndexedHold] = field(default_factory=dict)
    closed: dict[str, ClosedBy] = field(default_factory=dict)

    async def get(self, item_id: str) -> IndexedHold | None:
        return self.holds.get(item_id)

    async def closed_by(self, item_id: str) -> ClosedBy | None:
        return self.closed.get(item_id)


class FakeCalibration:
    async def record(self, *_: Any) -> list[Change]:
        return []


@dataclass
class FakePolicies:
    current: PolicySet


def _held(value: bytes = HELD, partition: int = 1) -> IndexedHold:
    meta = {
        "item_id": "c-1", "state": "pending", "blocking": True, "domain": "clinical-summaries",
        "pool": "clinicians", "reviewers": 1, "rubric": "clinical-accuracy",
        "content_hash": HASH, "held_at_ms": 1_794_999_000_000, "policy_version": "v1",
        "source": {"topic": "outputs", "partition": partition, "offset": 9}, "votes": [],
    }  # fmt: skip
    return IndexedHold(HoldMeta.of(meta), value, b"k", [("trace", b"t")], partition)


def _applier(index: FakeIndex) -> DecisionApplier:
    reviewers = Reviewers(
        (
            Reviewer(id="ana", token_sha256="0" * 64, pools=("clinicians",)),
            Reviewer(id="eve", token_sha256="1" * 64, pools=("general-graders",)),
        )
    )
    policies = load_policy_set(
        CONFIGS / "policies", CONFIGS / "pools.yaml", CONFIGS / "routing.yaml"
    )
    return DecisionApplier(
        TOPICS,
        index,
        reviewers,
        FakePolicies(policies),  # type: ignore[arg-type]
        FakeCalibration(),
        max_record_bytes=LIMIT,
    )


def _decision(**fields: Any) -> bytes:
    body = {"decision_id": "d-1", "item_id": "c-1", "reviewer": "ana", "verdict": "approve",
            "content_hash": HASH, **fields}  # fmt: skip
    return orjson.dumps(body)


def _topics(applied: Any) -> list[str]:
    return [o.topic for o in applied.outgoing]


async def test_an_approval_releases_the_original_and_closes_the_hold() -> None:
    applier = _applier(FakeIndex({"c-1": _held()}))
    applied = await applier.apply([Consumed(_decision())], 1, AuditChain())
    assert _topics(applied) == [TOPICS.delivered, TOPICS.training, TOPICS.holds, TOPICS.audit]
    delivered, training, tombstone, _ = applied.outgoing
    assert (delivered.value, delivered.key) == (HELD, b"k")
    assert dict(delivered.headers)["hitl.decision.id"] == b"d-1"
    assert tombstone.value is None
    assert dict(tombstone.headers) == {"hitl.decision.id": b"d-1", "hitl.decision.reviewer": b"ana"}
    assert orjson.loads(training.value)["original_output"] == {"text": "draft"}
    assert applied.results == {
        ("c-1", "ana", "d-1"): {"decision_id": "d-1", "item_id": "c-1", "reviewer": "ana",
                                 "status": 200, "refusal": None, "message": "",
                                 "state": "approved"}
    }  # fmt: skip


async def test_an_edit_that_would_not_fit_is_refused_before_any_record() -> None:
    applier = _applier(FakeIndex({"c-1": _held()}))
    big = _decision(verdict="edit", edited_output={"text": "e" * LIMIT})
    applied = await applier.apply([Consumed(big)], 1, AuditChain())
    assert _topics(applied) == [TOPICS.audit], "refused: only its audit event"
    result = applied.results[("c-1", "ana", "d-1")]
    assert (result["status"], result["refusal"]) == (413, "too_large")
    assert f"limit {LIMIT}" in result["message"]


async def test_a_training_record_refers_to_an_original_that_does_not_fit() -> None:
    held = orjson.dumps({"id": "c-1", "domain": "clinical-summaries", "output": "o" * 6_000})
    applier = _applier(FakeIndex({"c-1": _held(held)}))
    edit = _decision(verdict="edit", edited_output="e" * 6_000)
    applied = await applier.apply([Consumed(edit)], 1, AuditChain())
    training = orjson.loads(applied.outgoing[1].value)
    assert training["original_output"] is None
    assert training["original_output_ref"] == {"topic": "outputs", "partition": 1, "offset": 9,
                                               "content_hash": HASH}  # fmt: skip
    assert training["edited_output"] == "e" * 6_000
    assert len(applied.outgoing[1].value) <= LIMIT


async def test_a_closing_id_is_a_duplicate_for_its_reviewer_only() -> None:
    index = FakeIndex(closed={"c-1": ClosedBy("d-1", "ana")})
    applier = _applier(index)
    again = await applier.apply([Consumed(_decision())], 1, AuditChain())
    assert again.outgoing == []
    assert again.results[("c-1", "ana", "d-1")]["state"] == "duplicate"
    other = await applier.apply([Consumed(_decision(reviewer="eve"))], 1, AuditChain())
    assert other.results[("c-1", "eve", "d-1")]["refusal"] == "already_closed"


async def test_malformed_and_poisoned_decisions_are_refused_and_audited() -> None:
    applier = _applier(FakeIndex({"c-1": _held()}))
    records = [
        Consumed(b'{"decision_id": "d-2", "item_id": "c-1", "reviewer": "ana", "grade": NaN}'),
        Consumed(b"{not json"),
        Consumed(_decision(decision_id="d-3"), headers=(("\udcff", b"x"),)),
    ]
    applied = await applier.apply(records, 1, AuditChain())
    assert _topics(applied) == [TOPICS.audit] * 3
    events = [orjson.loads(o.value) for o in applied.outgoing]
    assert [e["refusal"] for e in events] == ["malformed"] * 3
    assert "not strict JSON" in events[0]["message"]
    # Filed where the decision names item, reviewer and id; otherwise the audit event is all.
    assert sorted(applied.results) == [("c-1", "ana", "d-3")]
    assert applied.refusals == ["malformed"] * 3


async def test_a_decision_on_another_partition_is_forwarded_there() -> None:
    applier = _applier(FakeIndex({"c-1": _held(partition=0)}))
    applied = await applier.apply([Consumed(_decision())], 1, AuditChain())
    [forwarded] = applied.outgoing
    assert (forwarded.topic, forwarded.partition) == (TOPICS.review_decisions, 0)
    assert applied.results == {}


async def test_a_large_edit_in_a_consensus_round_is_kept_as_its_digest() -> None:
    """Votes travel in the hold's metadata (a record header): a large edit would make every
    hold update carry it, past what the topics take. The hold keeps its digest; the closing
    vote's decision carries the edit, and agreement compares digests."""
    held = _held()
    held.meta.reviewers = 2
    index = FakeIndex({"c-1": held})
    applier = _applier(index)
    edit = {"text": "e" * 8_000, "notes": ["a", "b"]}
    first = await applier.apply(
        [Consumed(_decision(verdict="edit", edited_output=edit))], 1, AuditChain()
    )
    [update] = [o for o in first.outgoing if o.topic == TOPICS.holds]
    meta = orjson.loads(dict(update.headers)["hitl.hold"])
    [vote] = meta["votes"]
    assert vote["edited_output"] is None
    assert vote["edit_digest"].startswith("sha256:")
    assert len(dict(update.headers)["hitl.hold"]) < 2_000
    # The second reviewer's identical edit (keys in another order) closes it with the edit.
    index.holds["c-1"] = IndexedHold(HoldMeta.from_json(dict(update.headers)["hitl.hold"]),
                                     HELD, b"k", [], 1)  # fmt: skip
    applier._reviewers = Reviewers(
        (Reviewer(id="ben", token_sha256="2" * 64, pools=("clinicians",)),)
    )
    same = {"notes": ["a", "b"], "text": "e" * 8_000}
    second = await applier.apply(
        [Consumed(_decision(decision_id="d-2", reviewer="ben", verdict="edit",
                            edited_output=same))], 1, AuditChain(),
    )  # fmt: skip
    delivered = [o for o in second.outgoing if o.topic == TOPICS.delivered]
    assert [orjson.loads(d.value)["output"] for d in delivered] == [same]


async def test_a_training_record_stands_on_its_own() -> None:
    held = orjson.dumps({
        "id": "c-1", "domain": "clinical-summaries", "input": {"notes": "bp 120/80"},
        "output": {"text": "draft"}, "model": "summarizer", "model_version": "3.1",
        "confidence": 0.42, "language": "en-GB", "metadata": {"site": "north"},
        "created_at": "2026-12-01T10:00:00Z",
    })  # fmt: skip
    applier = _applier(FakeIndex({"c-1": _held(held)}))
    edit = _decision(verdict="edit", edited_output={"text": "fixed"}, grades={"accuracy": 3},
                     reason=None, notes="dose")  # fmt: skip
    applied = await applier.apply([Consumed(edit)], 1, AuditChain())
    training = orjson.loads(applied.outgoing[1].value)
    assert training == {
        "type": "review", "schema_version": 2, "item_id": "c-1", "decision_id": "d-1",
        "domain": "clinical-summaries", "rule": None, "blocking": True, "verdict": "edit",
        "input": {"notes": "bp 120/80"}, "model": "summarizer", "model_version": "3.1",
        "language": "en-GB", "created_at": "2026-12-01T10:00:00Z", "confidence": 0.42,
        "uncertainty": None, "metadata": {"site": "north"},
        "original_output": {"text": "draft"}, "edited_output": {"text": "fixed"},
        "reject_reason": None, "rubric": "clinical-accuracy", "grade": None,
        "grades": {"accuracy": 3}, "notes": "dose", "judge": None,
        "reviewer_pool": "clinicians", "reviewer": None, "policy_version": "v1",
        "held_at_ms": 1_794_999_000_000, "decided_at_ms": 1_795_000_000_000,
    }  # fmt: skip


async def test_a_rejection_carries_its_reason_and_an_input_too_large_is_referred_to() -> None:
    held = orjson.dumps({"id": "c-1", "domain": "clinical-summaries", "input": "i" * 12_000,
                         "output": {"text": "draft"}})  # fmt: skip
    applier = _applier(FakeIndex({"c-1": _held(held)}))
    reject = _decision(verdict="reject", reason="unsafe advice")
    applied = await applier.apply([Consumed(reject)], 1, AuditChain())
    assert _topics(applied) == [TOPICS.blocked, TOPICS.training, TOPICS.holds, TOPICS.audit]
    training = orjson.loads(applied.outgoing[1].value)
    assert (training["verdict"], training["reject_reason"]) == ("reject", "unsafe advice")
    assert training["input"] is None
    assert training["input_ref"] == {"topic": "outputs", "partition": 1, "offset": 9,
                                     "content_hash": HASH}  # fmt: skip
    assert training["original_output"] == {"text": "draft"}  # still fits once input is out


async def test_a_policy_that_allows_it_names_the_reviewer_in_training_records() -> None:
    applier = _applier(FakeIndex({"c-1": _held()}))
    policies = applier._policies.current
    clinical = policies.policies["clinical-summaries"]
    allowed = clinical.policy.model_copy(update={"training": Training(reviewer_identity=True)})
    named = dataclasses.replace(
        policies,
        policies={**policies.policies,
                  "clinical-summaries": dataclasses.replace(clinical, policy=allowed)},
    )  # fmt: skip
    applier._policies = FakePolicies(named)  # type: ignore[assignment]
    applied = await applier.apply([Consumed(_decision())], 1, AuditChain())
    training = orjson.loads(applied.outgoing[1].value)
    assert (training["reviewer"], training["reviewer_pool"]) == ("ana", "clinicians")
