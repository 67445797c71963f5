"""The cost and capacity planner: a traffic profile and the policies -> reviews, reviewer
hours, headcount and cost per domain and pool, with infeasible plans flagged and explained.

Pure arithmetic on the same policy files the gateway routes with. Rules take traffic in the
engine's precedence order; each takes its share of what the rules before it left.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hitl_gateway import yamlfile
from hitl_gateway.errors import ConfigError
from hitl_gateway.policy.loader import PolicySet
from hitl_gateway.policy.schema import DomainPolicy

FTE_HOURS_PER_WEEK = 40.0
DAYS_PER_MONTH = 30
# Beyond this many reviewer-hours a day no review team is realistic (about 125 full-time
# reviewers); the plan is flagged whatever the pools say.
MAX_TEAM_HOURS_PER_DAY = 1_000.0


class Threshold(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    below: float = Field(gt=0, lt=1)
    share: float = Field(ge=0, le=1)


class DomainTraffic(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    records_per_day: float = Field(ge=0)
    confidence: tuple[Threshold, ...] = ()  # share of traffic below each confidence value
    languages: dict[str, float] = Field(default_factory=dict)
    judge_grades: dict[str, float] = Field(default_factory=dict)
    tags: dict[str, float] = Field(default_factory=dict)  # share with metadata KEY="true"

    def share_below(self, value: float) -> float:
        """The confidence CDF, linear between the given points, (0, 0) and (1, 1)."""
        points = [(0.0, 0.0), *sorted((t.below, t.share) for t in self.confidence), (1.0, 1.0)]
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            if x0 <= value <= x1:
                return y0 if x1 == x0 else y0 + (y1 - y0) * (value - x0) / (x1 - x0)
        return 1.0


class TrafficProfile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str = ""
    domains: dict[str, DomainTraffic]


def load_traffic(path: Path) -> TrafficProfile:
    try:
        return TrafficProfile.model_validate(yamlfile.load(path.read_text(encoding="utf-8")))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid traffic profile: {yamlfile.describe(exc)}") from exc
    except (OSError, ValidationError) as exc:
        raise ConfigError(f"{path}: invalid traffic profile: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Line:
    """Reviews one rule of one domain sends to one pool."""

    domain: str
    rule: str
    pool: str
    reviews_per_day: float
    one_off: float = 0.0  # a fixed sample (pre-launch), not a daily flow


@dataclass
class PoolPlan:
    pool: str
    reviews_per_day: float = 0.0
    hours_per_day: float = 0.0
    cost_per_day: float = 0.0
    hours_available_per_week: float = 0.0
    problems: list[str] = field(default_factory=list)

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

    @property
    def feasible(self) -> bool:
        return not any(p.problems for p in self.pools.values())


def _lines(domain: str, policy: DomainPolicy, traffic: DomainTraffic) -> list[Line]:
    volume = traffic.records_per_day
    left = 1.0  # share of traffic no earlier rule took
    out: list[Line] = []

    def take(rule: str, pool: str, share: float, cap_per_day: float | None = None) -> None:
        nonlocal left
        share = max(0.0, min(share, 1.0)) * left
        per_day = volume * share
        if cap_per_day is not None:
            per_day = min(per_day, cap_per_day)
        out.append(Line(domain, rule, pool, per_day))
        left -= per_day / volume if volume else 0.0

    if policy.mandatory_review is not None:
        m = policy.mandatory_review
        out.append(Line(domain, "mandatory_review", m.pool, volume * m.reviewers))
        return out
    if policy.red_team is not None and policy.red_team.metadata:
        share = min(traffic.tags.get(k, 0.0) for k in policy.red_team.metadata)
        take("red_team", policy.red_team.pool, share)
    if policy.pre_launch is not None and policy.pre_launch.first:
        out.append(
            Line(domain, "pre_launch", policy.pre_launch.pool, 0.0, one_off=policy.pre_launch.first)
        )
    if policy.confidence_cascade is not None:
        c = policy.confidence_cascade
        low = traffic.share_below(c.below) if c.below is not None else 0.0
        graded = sum(traffic.judge_grades.get(g, 0.0) for g in c.judge_grades)
        take("confidence_cascade", c.pool, low + graded * (1 - low))
    if policy.active_learning is not None:
        a = policy.active_learning
        share = traffic.share_below(a.band[1]) - traffic.share_below(a.band[0])
        take("active_learning", a.pool, share, a.budget.count * 86_400 / a.budget.window)
    if policy.sampling is not None:
        s = policy.sampling
        if s.rate is not None:
            take("sampling", s.pool, s.rate)
        elif s.quota is not None:
            take("sampling", s.pool, 1.0, s.quota.count * 86_400 / s.quota.window)
    if policy.deferred_review is not None:
        take("deferred_review", policy.deferred_review.pool, policy.deferred_review.rate)
    return out


def plan(traffic: TrafficProfile, policies: PolicySet) -> Plan:
    lines: list[Line] = []
    shares: dict[str, float] = {}
    for domain, flow in sorted(traffic.domains.items()):
        loaded = policies.policy_for(domain)
        if loaded is None:
            raise ConfigError(f"traffic names domain '{domain}', which no policy covers")
        domain_lines = _lines(domain, loaded.policy, flow)
        lines += domain_lines
        items = sum(ln.reviews_per_day for ln in domain_lines if ln.rule != "mandatory_review")
        if loaded.policy.mandatory_review is not None:
            items = flow.records_per_day
        shares[domain] = items / flow.records_per_day if flow.records_per_day else 0.0
    pools: dict[str, PoolPlan] = defaultdict(lambda: PoolPlan(""))
    for line in lines:
        pool = policies.pools[line.pool]
        p = pools[line.pool]
        p.pool = line.pool
        p.reviews_per_day += line.reviews_per_day
        p.hours_per_day += line.reviews_per_day / pool.cases_per_hour
        p.cost_per_day += line.reviews_per_day / pool.cases_per_hour * pool.cost_per_hour_usd
        p.hours_available_per_week = pool.hours_per_week
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
    return Plan(lines, dict(pools), shares)


def render(result: Plan) -> str:
    out = [f"{'domain':22}{'rule':20}{'pool':22}{'reviews/day':>12}{'reviews/week':>13}"]
    for ln in result.lines:
        if ln.one_off:
            out.append(f"{ln.domain:22}{ln.rule:20}{ln.pool:22}{'one-off':>12}{ln.one_off:>13,.0f}")
        else:
            out.append(
                f"{ln.domain:22}{ln.rule:20}{ln.pool:22}{ln.reviews_per_day:>12,.1f}"
                f"{ln.reviews_per_day * 7:>13,.0f}"
            )
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
        out += [f"  INFEASIBLE: {problem}" for problem in p.problems]
    out += ["", "plan: feasible" if result.feasible else "plan: INFEASIBLE (see above)"]
    return "\n".join(out)


def _percent(share: float) -> str:
    return f"{share:.1%}" if share == 0 or share >= 0.001 else f"{share:.5%}"
