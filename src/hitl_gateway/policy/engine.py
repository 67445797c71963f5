"""Stage 2: the routing engine. ``decide(record, policies, ...)`` is pure and synchronous.

Precedence (first rule that fires wins; its action sets the route):
mandatory_review > red_team > pre_launch > confidence_cascade > active_learning > sampling >
deferred_review > pass. Sampling draws use a keyed hash of (policy version, seed, rule,
record id), never ``random()``; quotas and budgets are read from a ``BudgetView`` and the
slots a decision takes are returned as claims, so the same record routes the same way again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from hitl_gateway.models import InputRecord, Route
from hitl_gateway.policy.budget import BudgetView, Claim
from hitl_gateway.policy.loader import LoadedPolicy, PolicySet
from hitl_gateway.policy.pools import choose
from hitl_gateway.policy.rules import (
    ActiveLearning,
    ConfidenceCascade,
    FullReviewSample,
    ReviewAction,
    Reviewed,
    Sampling,
)
from hitl_gateway.policy.schema import GoldItem
from hitl_gateway.policy.selection import (
    first_n_key,
    selector_text,
    selects,
    stratum_of,
    ttl,
    unit_hash,
    window_key,
)

# The pool of holds routed by earlier versions when no pool spoke the language: the
# re-router moves them to the pool the current policy chooses.
UNASSIGNED = "unassigned"


# Reason and Decision are named tuples: immutable like a frozen dataclass, built in a
# fraction of its time (one of each per record; a frozen dataclass sets every field
# through object.__setattr__).
class Reason(NamedTuple):
    rule: str
    detail: str  # with the numbers, e.g. "confidence 0.42 < 0.60"


class Decision(NamedTuple):
    domain: str
    route: Route
    reasons: tuple[Reason, ...]
    policy_version: str
    pool: str | None = None
    reviewers: int = 0
    adjudicator_pool: str | None = None
    sla_deadline_ms: int | None = None
    blind: bool = False
    rubric: str | None = None
    audit: bool = True
    claims: tuple[Claim, ...] = ()
    stratum: str = ""  # the sampling stratum, when the sampling rule stratifies
    gold: GoldItem | None = None  # a known-answer item to slip into the same pool's queue
    language: str | None = None  # the record's, for re-routing and reassignment by language
    fallback: bool = False  # no pool speaks the language: the fallback pool took it
    uncertainty: float | None = None  # active learning: 1 most worth labelling, 0 least

    @property
    def rule(self) -> str:
        return self.reasons[0].rule


@dataclass(slots=True)
class _Fired:  # internal to decide(): the rule that fired
    rule: str
    detail: str
    action: ReviewAction
    spec: Reviewed  # the rule as declared: pool, SLA, rubric, reviewers, adjudicator pool
    blind: bool = False
    claims: tuple[Claim, ...] = ()
    stratum: str = ""
    uncertainty: float | None = None


def decide(
    record: InputRecord, policies: PolicySet, *, timestamp_ms: int, budgets: BudgetView
) -> Decision:
    loaded = policies.policy_for(record.domain)
    if loaded is None:
        return Decision(
            domain=record.domain,
            route=Route.DEADLETTER,
            reasons=(Reason("unknown_domain", f"no policy for domain '{record.domain}'"),),
            policy_version=policies.version,
        )
    fired = _first_rule(record, loaded, timestamp_ms, budgets)
    policy = loaded.policy
    audit_all = policy.audit.level == "full"
    if fired is None:
        return Decision(
            domain=record.domain,
            route=Route.PASS,
            reasons=(Reason("pass", "no review rule matched"),),
            policy_version=loaded.version,
            audit=audit_all,
        )
    choice = choose(
        record.language,
        fired.rule,
        rule_pool=fired.spec.pool,
        policy=policy,
        pools=policies.pools,
        default_fallback=policies.routing.review_defaults.fallback_pool,
    )
    pool = choice.pool
    reasons = [Reason(fired.rule, fired.detail)]
    route = Route.HOLD if fired.action is ReviewAction.HOLD else Route.DELIVER_AND_REVIEW
    if choice.detail is not None:
        reasons.append(Reason("language", choice.detail))
    if choice.fallback:
        route = Route.HOLD  # fail closed: nobody who speaks the language has seen it
    return Decision(
        domain=record.domain,
        route=route,
        reasons=tuple(reasons),
        policy_version=loaded.version,
        pool=pool,
        reviewers=fired.spec.reviewers,
        adjudicator_pool=fired.spec.adjudicator_pool,
        sla_deadline_ms=timestamp_ms + int(fired.spec.sla * 1000),
        blind=fired.blind,
        rubric=fired.spec.rubric,
        audit=True,
        claims=fired.claims,
        stratum=fired.stratum,
        gold=_gold_pick(loaded, record.id),
        language=record.language,
        fallback=choice.fallback,
        uncertainty=fired.uncertainty,
    )


def _gold_pick(loaded: LoadedPolicy, item_id: str) -> GoldItem | None:
    """With the policy's gold rate, one of its gold items (both draws keyed by the item)."""
    gold = loaded.policy.calibration.gold
    if gold is None or not loaded.gold:
        return None
    if unit_hash(loaded.version, loaded.policy.seed, "gold", item_id) >= gold.rate:
        return None
    draw = unit_hash(loaded.version, loaded.policy.seed, "gold_pick", item_id)
    return loaded.gold[int(draw * len(loaded.gold))]


# -- rules, in precedence order ---------------------------------------------------------------


def _first_rule(
    record: InputRecord, loaded: LoadedPolicy, timestamp_ms: int, budgets: BudgetView
) -> _Fired | None:
    p = loaded.policy
    if p.mandatory_review is not None:
        m = p.mandatory_review
        return _Fired(
            "mandatory_review",
            f"every '{p.domain}' output is reviewed by {m.reviewers} reviewer(s)",
            ReviewAction.HOLD,
            m,
        )
    for name, rule in (("red_team", p.red_team), ("pre_launch", p.pre_launch)):
        if rule is not None:
            fired = _full_review(name, rule, record, loaded, budgets)
            if fired is not None:
                return fired
    if p.confidence_cascade is not None:
        fired = _cascade(p.confidence_cascade, record)
        if fired is not None:
            return fired
    if p.active_learning is not None:
        fired = _active_learning(p.active_learning, record, loaded, timestamp_ms, budgets)
        if fired is not None:
            return fired
    if p.sampling is not None:
        fired = _sampling(p.sampling, record, loaded, timestamp_ms, budgets)
        if fired is not None:
            return fired
    if p.deferred_review is not None:
        d = p.deferred_review
        draw = unit_hash(loaded.version, p.seed, "deferred_review", record.id)
        if draw < d.rate:
            return _Fired(
                "deferred_review",
                f"sampled for later review (draw {draw:.4f} < rate {d.rate})",
                ReviewAction.DELIVER_AND_REVIEW,
                d,
            )
    return None


def _full_review(
    name: str,
    rule: FullReviewSample,
    record: InputRecord,
    loaded: LoadedPolicy,
    budgets: BudgetView,
) -> _Fired | None:
    if not selects(rule, record):
        return None
    claims: tuple[Claim, ...] = ()
    detail = f"selected by {selector_text(rule, record)}"
    if rule.first is not None:
        key = first_n_key(loaded, name, record)
        if not budgets.claimed(key, record.id):
            used = budgets.used(key)
            if used >= rule.first:
                return None
            claims = (Claim(key, rule.first, None),)
            detail += f"; record {used + 1} of the first {rule.first}"
        else:
            detail += f"; one of the first {rule.first}"
    return _Fired(name, detail, rule.action, rule, claims=claims)


def _cascade(rule: ConfidenceCascade, record: InputRecord) -> _Fired | None:
    why: list[str] = []
    if rule.below is not None:
        if record.confidence is None:
            if rule.missing_confidence == "review":
                why.append("confidence missing")
        elif record.confidence < rule.below:
            why.append(f"confidence {record.confidence:.4g} < {rule.below}")
    judge = record.judge
    score = judge.score if judge is not None else None
    if rule.judge_score_below is not None and score is not None and score < rule.judge_score_below:
        why.append(f"judge score {score:.4g} < {rule.judge_score_below}")
    if rule.judge_grades and judge is not None and judge.grade in rule.judge_grades:
        why.append(f"judge grade {judge.grade} in {list(rule.judge_grades)}")
    if not why:
        return None
    return _Fired("confidence_cascade", "; ".join(why), rule.action, rule)


def _active_learning(
    rule: ActiveLearning,
    record: InputRecord,
    loaded: LoadedPolicy,
    timestamp_ms: int,
    budgets: BudgetView,
) -> _Fired | None:
    low, high = rule.band
    c = record.confidence
    if c is None or not low <= c <= high:
        return None
    uncertainty = rule.uncertainty(c)
    key = window_key(loaded, "active_learning", rule.budget.window, timestamp_ms)
    cap = rule.budget.count
    if not budgets.claimed(key, record.id):
        used = budgets.used(key)
        # As the budget fills, only ever more uncertain cases are admitted.
        if used >= cap or uncertainty < used / cap:
            return None
        claims: tuple[Claim, ...] = (Claim(key, cap, ttl(rule.budget.window)),)
        detail = (
            f"confidence {c:.4g} in band [{low}, {high}] (uncertainty {uncertainty:.2f}); "
            f"budget {used + 1}/{cap} this window"
        )
    else:
        claims = ()
        detail = f"confidence {c:.4g} in band [{low}, {high}]; budget slot already held"
    return _Fired("active_learning", detail, ReviewAction.DELIVER_AND_REVIEW, rule, claims=claims,
                  uncertainty=round(uncertainty, 6))  # fmt: skip


def _sampling(
    rule: Sampling,
    record: InputRecord,
    loaded: LoadedPolicy,
    timestamp_ms: int,
    budgets: BudgetView,
) -> _Fired | None:
    draw = unit_hash(loaded.version, loaded.policy.seed, "sampling", record.id)
    if rule.rate is not None:
        if draw >= rule.rate:
            return None
        detail = f"sampled (draw {draw:.4f} < rate {rule.rate})"
        return _Fired("sampling", detail, ReviewAction.DELIVER_AND_REVIEW, rule, blind=rule.blind)
    assert rule.quota is not None  # schema: exactly one of rate or quota
    quota = rule.quota
    # Spread the quota over the window when the volume is known, rather than first-come.
    volume = loaded.policy.expected_daily_volume
    if volume:
        expected = volume * quota.window / 86_400
        gate = min(1.0, 2 * quota.count / expected) if expected else 1.0
        if draw >= gate:
            return None
    key = window_key(loaded, "sampling", quota.window, timestamp_ms)
    keyed = [Claim(key, quota.count, ttl(quota.window))]
    stratum = ""
    if rule.stratify_by:
        stratum = stratum_of(record, rule)
        keyed.append(Claim(f"{key}|{stratum}", math.ceil(quota.count / rule.strata),
                           ttl(quota.window)))  # fmt: skip
    if all(budgets.claimed(c.key, record.id) for c in keyed):
        claims: tuple[Claim, ...] = ()
    elif all(budgets.used(c.key) < c.cap for c in keyed):
        claims = tuple(keyed)
    else:
        return None
    slot = budgets.used(key) + (1 if claims else 0)
    detail = f"quota sample {slot}/{quota.count} this window"
    if stratum:
        detail += f", stratum {stratum}"
    return _Fired("sampling", detail, ReviewAction.DELIVER_AND_REVIEW, rule, blind=rule.blind,
                  claims=claims, stratum=stratum)  # fmt: skip
