"""The cost and capacity planner: a traffic profile and the policies -> reviews, reviewer
hours, headcount and cost per domain and pool, with infeasible plans flagged and explained.

Pure arithmetic on the same policy files the gateway routes with. Rules take traffic in the
engine's precedence order; each takes its share of what the rules before it left. Each rule's
reviews are split by the profile's language shares and charged to the pool the engine's own
``choose()`` picks for that language, so the plan and the live routing agree by construction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from hitl_gateway.errors import ConfigError
from hitl_gateway.policy.loader import PolicySet
from hitl_gateway.policy.pools import ANY_LANGUAGE, choose, speaks
from hitl_gateway.policy.rules import Reviewed
from hitl_gateway.policy.schema import DomainPolicy, Pool
from hitl_gateway.traffic import DomainTraffic, TrafficProfile

FTE_HOURS_PER_WEEK = 40.0
DAYS_PER_MONTH = 30
# Beyond this many reviewer-hours a day no review team is realistic (about 125 full-time
# reviewers); the plan is flagged whatever the pools say.
MAX_TEAM_HOURS_PER_DAY = 1_000.0


@dataclass(frozen=True, slots=True)
class Line:
    """Reviews one rule of one domain sends to one pool (for one language of its traffic)."""

    domain: str
    rule: str
    pool: str
    reviews_per_day: float
    one_off: float = 0.0  # a fixed sample (pre-launch), not a daily flow
    language: str | None = None  # None: traffic with no language, or an adjudication line
    adjudication: bool = False  # the rule's disagreements, sent to its adjudicator_pool
    fallback: bool = False  # no pool speaks the language: the fallback pool took it


@dataclass(frozen=True, slots=True)
class _Load:
    """Items one rule selects (before languages and consensus)."""

    rule: str
    spec: Reviewed
    items_per_day: float
    one_off: float = 0.0


@dataclass
class PoolPlan:
    pool: str
    reviews_per_day: float = 0.0
    hours_per_day: float = 0.0
    cost_per_day: float = 0.0
    hours_available_per_week: float = 0.0
    adjudications_per_day: float = 0.0  # included in reviews_per_day
    adjudication_hours_per_day: float = 0.0  # included in hours_per_day
    problems: list[str] = field(default_factory=list)  # the plan is infeasible
    warnings: list[str] = field(default_factory=list)  # feasible, but look at it

    @property
    def hours_per_week(self) -> float:
        return self.hours_per_day * 7

    @property
    def headcount(self) -> float:
        return self.hours_per_week / FTE_HOURS_PER_WEEK


@dataclass
class Plan:
    lines: list[Line]
    pools: dict[str, PoolPlan]
    reviewed_share: dict[str, float]
    warnings: list[str] = field(default_factory=list)  # not tied to a pool

    @property
    def feasible(self) -> bool:
        return not any(p.problems for p in self.pools.values())


def _loads(policy: DomainPolicy, traffic: DomainTraffic) -> list[_Load]:
    volume = traffic.records_per_day
    left = 1.0  # share of traffic no earlier rule took
    out: list[_Load] = []

    def take(rule: str, spec: Reviewed, share: float, cap_per_day: float | None = None) -> None:
        nonlocal left
        share = max(0.0, min(share, 1.0)) * left
        per_day = volume * share
        if cap_per_day is not None:
            per_day = min(per_day, cap_per_day)
        out.append(_Load(rule, spec, per_day))
        left -= per_day / volume if volume else 0.0

    if policy.mandatory_review is not None:
        return [_Load("mandatory_review", policy.mandatory_review, volume)]
    if policy.red_team is not None and policy.red_team.metadata:
        share = min(traffic.tags.get(k, 0.0) for k in policy.red_team.metadata)
        take("red_team", policy.red_team, share)
    if policy.pre_launch is not None and policy.pre_launch.first:
        out.append(_Load("pre_launch", policy.pre_launch, 0.0, one_off=policy.pre_launch.first))
    if policy.confidence_cascade is not None:
        c = policy.confidence_cascade
        low = traffic.share_below(c.below) if c.below is not None else 0.0
        graded = sum(traffic.judge_grades.get(g, 0.0) for g in c.judge_grades)
        take("confidence_cascade", c, low + graded * (1 - low))
    if policy.active_learning is not None:
        a = policy.active_learning
        share = traffic.share_below(a.band[1]) - traffic.share_below(a.band[0])
        take("active_learning", a, share, a.budget.count * 86_400 / a.budget.window)
    if policy.sampling is not None:
        s = policy.sampling
        if s.rate is not None:
            take("sampling", s, s.rate)
        elif s.quota is not None:
            take("sampling", s, 1.0, s.quota.count * 86_400 / s.quota.window)
    if policy.deferred_review is not None:
        take("deferred_review", policy.deferred_review, policy.deferred_review.rate)
    return out


def _lines(
    domain: str,
    policy: DomainPolicy,
    loads: list[_Load],
    traffic: DomainTraffic,
    policies: PolicySet,
) -> list[Line]:
    """Each rule's items, split by language, times its reviewers, at the pool ``choose()``
    picks; then its disagreements at the adjudicator pool (the engine hands that pool on as
    the rule names it, whatever the language)."""
    out: list[Line] = []
    for load in loads:
        spec = load.spec
        for language, share in traffic.language_shares():
            choice = choose(
                language,
                load.rule,
                rule_pool=spec.pool,
                policy=policy,
                pools=policies.pools,
                default_fallback=policies.routing.review_defaults.fallback_pool,
            )
            n = share * spec.reviewers
            items, once = load.items_per_day * n, load.one_off * n
            line = Line(
                domain, load.rule, choice.pool, items, once, language, fallback=choice.fallback
            )
            out.append(line)
        if spec.reviewers > 1 and spec.adjudicator_pool is not None:
            rate = spec.expected_disagreement
            items, once = load.items_per_day * rate, load.one_off * rate
            out.append(
                Line(domain, load.rule, spec.adjudicator_pool, items, once, adjudication=True)
            )
    return out


def plan(traffic: TrafficProfile, policies: PolicySet) -> Plan:
    lines: list[Line] = []
    shares: dict[str, float] = {}
    for domain, flow in sorted(traffic.domains.items()):
        loaded = policies.policy_for(domain)
        if loaded is None:
            raise ConfigError(f"traffic names domain '{domain}', which no policy covers")
        loads = _loads(loaded.policy, flow)
        lines += _lines(domain, loaded.policy, loads, flow, policies)
        items = sum(load.items_per_day for load in loads)
        shares[domain] = items / flow.records_per_day if flow.records_per_day else 0.0
    pools = _pools(lines, policies.pools)
    result = Plan(lines, pools, shares)
    _flag_languages(result, traffic, policies.pools)
    return result


def _pools(lines: list[Line], specs: Mapping[str, Pool]) -> dict[str, PoolPlan]:
    pools: dict[str, PoolPlan] = {}
    for line in lines:
        spec = specs[line.pool]
        p = pools.setdefault(
            line.pool, PoolPlan(line.pool, hours_available_per_week=spec.hours_per_week)
        )
        hours = line.reviews_per_day / spec.cases_per_hour
        p.reviews_per_day += line.reviews_per_day
        p.hours_per_day += hours
        p.cost_per_day += hours * spec.cost_per_hour_usd
        if line.adjudication:
            p.adjudications_per_day += line.reviews_per_day
            p.adjudication_hours_per_day += hours
    for p in pools.values():
        if p.hours_per_week > p.hours_available_per_week:
            p.problems.append(
                f"needs {p.hours_per_week:,.0f} reviewer-hours a week; the pool has "
                f"{p.hours_available_per_week:,.0f}"
            )
        if p.hours_per_day > MAX_TEAM_HOURS_PER_DAY:
            p.problems.append(
                f"{p.hours_per_day:,.0f} reviewer-hours a day is about "
                f"{math.ceil(p.headcount):,} full-time reviewers: more than any review team "
                "could be; calibrate the automated judge on a sample instead"
            )
    return pools


def _flag_languages(result: Plan, traffic: TrafficProfile, pools: Mapping[str, Pool]) -> None:
    """Warn where a language's reviews land on a fallback pool, or on a pool that does not
    speak it because no pool in pools.yaml lists it (``*`` is not a listing)."""
    unlisted = {lang for f in traffic.domains.values() for lang in f.languages}
    unlisted -= {lang for lang in unlisted if any(_lists(p, lang) for p in pools.values())}
    landed: dict[tuple[str, str, str, bool], tuple[float, float]] = {}
    for ln in result.lines:
        if ln.language is not None and (ln.fallback or ln.language in unlisted):
            key = (ln.domain, ln.language, ln.pool, ln.fallback)
            per_day, one_off = landed.get(key, (0.0, 0.0))
            landed[key] = (per_day + ln.reviews_per_day, one_off + ln.one_off)
    flagged: set[tuple[str, str]] = set()
    for (domain, lang, pool, fallback), (per_day, one_off) in landed.items():
        if per_day or one_off:
            flagged.add((domain, lang))
            where = (
                f"the fallback pool {pool}"
                if fallback
                else f"{pool}, which does not speak it either"
            )
            result.pools[pool].warnings.append(
                f"{domain}: no pool speaks {lang}: {_amount(per_day, one_off)} go to {where}"
            )
    for domain, flow in sorted(traffic.domains.items()):
        for lang, share in flow.languages.items():
            if lang in unlisted and share > 0 and (domain, lang) not in flagged:
                result.warnings.append(
                    f"{domain}: no pool in pools.yaml lists {lang} ({_percent(share)} of its "
                    "traffic; no rule reviews it now)"
                )


def _lists(pool: Pool, language: str) -> bool:
    return bool(pool.languages) and ANY_LANGUAGE not in pool.languages and speaks(pool, language)


def _amount(per_day: float, one_off: float) -> str:
    parts = [f"{per_day:,.1f} reviews/day"] if per_day else []
    parts += [f"{one_off:,.0f} one-off reviews"] if one_off else []
    return " and ".join(parts)


def render(result: Plan) -> str:
    out = [
        f"{'domain':22}{'rule':20}{'language':11}{'pool':22}{'reviews/day':>12}{'reviews/week':>13}"
    ]
    for ln in result.lines:
        rule = "  adjudication" if ln.adjudication else ln.rule
        head = f"{ln.domain:22}{rule:20}{ln.language or '-':11}{ln.pool:22}"
        if ln.one_off:
            out.append(f"{head}{'one-off':>12}{ln.one_off:>13,.0f}")
        else:
            out.append(f"{head}{ln.reviews_per_day:>12,.1f}{ln.reviews_per_day * 7:>13,.0f}")
    shares = ", ".join(f"{d} {_percent(s)}" for d, s in sorted(result.reviewed_share.items()))
    out += ["", f"share of traffic reviewed: {shares}"]
    out += [
        "",
        f"{'pool':22}{'hours/day':>10}{'hours/week':>11}{'available':>10}{'FTE':>7}"
        f"{'USD/day':>11}{'USD/week':>11}{'USD/month':>12}",
    ]
    for p in sorted(result.pools.values(), key=lambda x: x.pool):
        out.append(
            f"{p.pool:22}{p.hours_per_day:>10,.1f}{p.hours_per_week:>11,.1f}"
            f"{p.hours_available_per_week:>10,.0f}{p.headcount:>7.1f}{p.cost_per_day:>11,.0f}"
            f"{p.cost_per_day * 7:>11,.0f}{p.cost_per_day * DAYS_PER_MONTH:>12,.0f}"
        )
        if p.adjudications_per_day:
            out.append(
                f"  includes {p.adjudications_per_day:,.1f} adjudications/day "
                f"({p.adjudication_hours_per_day:,.1f} hours/day): multi-reviewer disagreements"
            )
        out += [f"  INFEASIBLE: {problem}" for problem in p.problems]
        out += [f"  WARNING: {warning}" for warning in p.warnings]
    out += [f"WARNING: {warning}" for warning in result.warnings]
    out += ["", "plan: feasible" if result.feasible else "plan: INFEASIBLE (see above)"]
    return "\n".join(out)


def _percent(share: float) -> str:
    return f"{share:.1%}" if share == 0 or share >= 0.001 else f"{share:.5%}"
