"""What a closed review contributes to judge and reviewer calibration (pure)."""

from __future__ import annotations

import dataclasses
from typing import Any

from hitl_gateway.calibration.evidence import (
    ConsensusCheck,
    GoldAnswer,
    JudgePair,
    RatedUnit,
    evidence,
)
from hitl_gateway.models import HoldMeta
from hitl_gateway.verdicts import Verdict, Vote


def _meta(**over: Any) -> HoldMeta:
    meta = {
        "item_id": "i1",
        "content_hash": "sha256:" + "0" * 64,
        "held_at_ms": 1,
        "domain": "support-chat",
        "pool": "support-agents",
        "reviewers": 1,
        "rubric": "helpfulness-v1",
        "blind": True,
        "judge": {"grade": "pass", "score": 0.9},
        "stratum": "language=en",
    }
    return HoldMeta.of(meta | over)


def _vote(who: str, verdict: Verdict, grade: str | None = None, **grades: Any) -> Vote:
    return Vote(f"d-{who}", who, verdict, 0, None, grade, grades)


def test_a_blind_review_with_both_grades_is_a_judge_comparison() -> None:
    ev = evidence(_meta(), (_vote("ana", Verdict.APPROVE, "fail"),), Verdict.APPROVE)
    assert ev.judge == JudgePair("support-chat", "language=en", "pass", "fail")
    assert not ev.judge.agree
    assert ev.units == ()
    assert ev.checks == ()


def test_no_comparison_without_blindness_a_judge_grade_or_a_human_grade() -> None:
    approve = (_vote("ana", Verdict.APPROVE, "pass"),)
    assert evidence(_meta(blind=False), approve, Verdict.APPROVE).judge is None
    assert evidence(_meta(judge=None), approve, Verdict.APPROVE).judge is None
    assert evidence(_meta(), (_vote("ana", Verdict.APPROVE),), Verdict.APPROVE).judge is None


def test_multi_reviewer_items_give_units_per_dimension_and_consensus_checks() -> None:
    meta = _meta(reviewers=3, blind=False)
    votes = (
        _vote("ana", Verdict.APPROVE, accuracy=4),
        _vote("ben", Verdict.APPROVE, accuracy=4),
        _vote("cy", Verdict.REJECT, accuracy=2),
        _vote("dee", Verdict.APPROVE),  # the adjudicator
    )
    moved = dataclasses.replace(meta, review_pool="support-agents", pool="leads")
    ev = evidence(moved, votes, Verdict.APPROVE)
    assert RatedUnit("support-agents", "helpfulness-v1", "verdict",
                     ("approve", "approve", "reject")) in ev.units  # fmt: skip
    assert RatedUnit("support-agents", "helpfulness-v1", "accuracy", (4, 4, 2)) in ev.units
    # The adjudicator is not a rater of the unit; agreement is with the final verdict, and for
    # the grade with the majority (the adjudicator gave none).
    assert ConsensusCheck("support-agents", "cy", False) in ev.checks
    assert ev.checks.count(ConsensusCheck("support-agents", "ana", True)) == 2
    assert len(ev.checks) == 6


def test_a_tie_on_a_grade_is_no_consensus() -> None:
    votes = (_vote("ana", Verdict.APPROVE, "good"), _vote("ben", Verdict.APPROVE, "poor"))
    ev = evidence(_meta(reviewers=2, blind=False), votes, Verdict.APPROVE)
    assert {u.dimension for u in ev.units} == {"verdict", "grade"}
    assert all(c.agreed for c in ev.checks)  # only the verdict had a consensus
    assert len(ev.checks) == 2


def test_gold_items_measure_the_reviewer_and_nothing_else() -> None:
    gold = {"id": "g1", "verdict": "reject", "grade": "fail"}
    right = evidence(_meta(gold=gold), (_vote("ana", Verdict.REJECT, "fail"),), Verdict.REJECT)
    assert right.gold == GoldAnswer("support-agents", "ana", True)
    assert right.judge is None
    wrong_grade = evidence(
        _meta(gold=gold), (_vote("ana", Verdict.REJECT, "pass"),), Verdict.REJECT
    )
    assert wrong_grade.gold == GoldAnswer("support-agents", "ana", False)
    wrong_verdict = evidence(_meta(gold=gold), (_vote("ana", Verdict.APPROVE),), Verdict.APPROVE)
    assert wrong_verdict.gold is not None
    assert not wrong_verdict.gold.correct
