"""What a closed review teaches about the judge and the reviewers, as pure functions.

From a hold's metadata and its votes, at the moment it closes:

- a judge comparison: a blind review whose record carried a judge grade and whose deciding
  reviewer gave an overall ``grade`` (per domain and per stratum);
- rated units for inter-annotator agreement: items reviewed by two or more reviewers, one
  unit per rubric dimension (the verdict, the overall grade, each ``grades`` key);
- consensus checks: for each of those reviewers and dimensions, whether the reviewer agreed
  with the consensus (the final verdict; for grades, the adjudicator's or the majority's);
- a gold answer: a known-answer item, right or wrong.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from hitl_gateway.models import HoldMeta
from hitl_gateway.verdicts import Verdict, Vote

VERDICT = "verdict"  # the dimension every multi-reviewer item has
GRADE = "grade"  # the overall grade


@dataclass(frozen=True, slots=True)
class JudgePair:
    domain: str
    stratum: str  # "" when the sampling rule does not stratify
    judge: str
    human: str

    @property
    def agree(self) -> bool:
        return self.judge == self.human


@dataclass(frozen=True, slots=True)
class RatedUnit:
    pool: str
    rubric: str
    dimension: str
    values: tuple[Any, ...]  # one per reviewer (str or number)


@dataclass(frozen=True, slots=True)
class ConsensusCheck:
    pool: str
    reviewer: str
    agreed: bool


@dataclass(frozen=True, slots=True)
class GoldAnswer:
    pool: str
    reviewer: str
    correct: bool


@dataclass(frozen=True, slots=True)
class Evidence:
    judge: JudgePair | None = None
    units: tuple[RatedUnit, ...] = ()
    checks: tuple[ConsensusCheck, ...] = ()
    gold: GoldAnswer | None = None


def evidence(meta: HoldMeta, votes: tuple[Vote, ...], terminal: Verdict) -> Evidence:
    """``votes``: every vote on the item in order, the closing one last."""
    if not votes:
        return Evidence()
    final = votes[-1]
    pool = meta.review_pool or meta.pool
    gold = meta.gold
    if gold:
        correct = final.verdict.value == gold["verdict"] and (
            gold.get("grade") is None or final.grade == gold["grade"]
        )
        return Evidence(gold=GoldAnswer(pool, final.reviewer, correct))
    judge_grade = (meta.judge or {}).get("grade")
    pair = None
    if meta.blind and judge_grade is not None and final.grade is not None:
        pair = JudgePair(meta.domain, meta.stratum or "", str(judge_grade), final.grade)
    reviewers = int(meta.reviewers or 1)
    if reviewers < 2 or len(votes) < reviewers:
        return Evidence(judge=pair)
    round_votes = votes[:reviewers]
    adjudicator = votes[reviewers] if len(votes) > reviewers else None
    rubric = meta.rubric or "-"
    units: list[RatedUnit] = []
    checks: list[ConsensusCheck] = []
    for dimension in _dimensions(round_votes):
        values = tuple(_value(v, dimension) for v in round_votes)
        rated = [(v.reviewer, x) for v, x in zip(round_votes, values, strict=True) if x is not None]
        if len(rated) < 2:
            continue
        units.append(RatedUnit(pool, rubric, dimension, tuple(x for _, x in rated)))
        consensus = _consensus(dimension, [x for _, x in rated], adjudicator, terminal)
        if consensus is None:
            continue
        checks += [ConsensusCheck(pool, who, x == consensus) for who, x in rated]
    return Evidence(judge=pair, units=tuple(units), checks=tuple(checks))


def _dimensions(votes: tuple[Vote, ...]) -> list[str]:
    names = [VERDICT]
    if any(v.grade is not None for v in votes):
        names.append(GRADE)
    names += sorted({k for v in votes for k in v.grades})
    return names


def _value(vote: Vote, dimension: str) -> Any:
    if dimension == VERDICT:
        return vote.verdict.value
    if dimension == GRADE:
        return vote.grade
    return vote.grades.get(dimension)


def _consensus(
    dimension: str, values: list[Any], adjudicator: Vote | None, terminal: Verdict
) -> Any:
    """The verdict that closed the item; for grades, the adjudicator's if given, else a
    strict majority (no consensus on a tie)."""
    if dimension == VERDICT:
        return terminal.value
    if adjudicator is not None:
        decided = _value(adjudicator, dimension)
        if decided is not None:
            return decided
    ranked = [*Counter(values).most_common(2), (None, 0)]
    (top, count), (_, runner_up) = ranked[0], ranked[1]
    return top if count > runner_up else None
