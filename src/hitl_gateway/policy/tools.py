"""Policy tooling for compliance teams: lint warnings, offline simulation, JSON Schema.

Pure functions over a ``PolicySet``; the CLI only parses arguments and prints.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from hitl_gateway.codec import decode
from hitl_gateway.models import InputRecord, Invalid, Route
from hitl_gateway.policy.budget import MemoryLedger
from hitl_gateway.policy.engine import UNASSIGNED, Decision, decide
from hitl_gateway.policy.loader import PolicySet
from hitl_gateway.policy.problems import Problem
from hitl_gateway.policy.schema import DomainPolicy, PoolFile, RoutingFile
from hitl_gateway.review.auth import Reviewers

MIN_RELIABLE_SAMPLE = 200  # the guide: minimum cases for production-grade evaluation
WEEK_S = 7 * 86_400


# -- check: legal but suspicious ----------------------------------------------------------------


def weekly_review_load(policy: DomainPolicy) -> dict[str, float]:
    """Reviews a week each pool gets from this domain, where the files make it computable."""
    volume = (policy.expected_daily_volume or 0) * 7
    load: dict[str, float] = defaultdict(float)
    if policy.mandatory_review is not None:
        load[policy.mandatory_review.pool] += volume * policy.mandatory_review.reviewers
        return dict(load)  # mandatory takes every record: nothing else fires
    if policy.active_learning is not None:
        budget = policy.active_learning.budget
        load[policy.active_learning.pool] += budget.count * WEEK_S / budget.window
    if policy.sampling is not None:
        s = policy.sampling
        if s.rate is not None:
            load[s.pool] += volume * s.rate
        elif s.quota is not None:
            load[s.pool] += min(volume or float("inf"), s.quota.count * WEEK_S / s.quota.window)
    if policy.deferred_review is not None:
        load[policy.deferred_review.pool] += volume * policy.deferred_review.rate
    return {pool: n for pool, n in load.items() if n != float("inf")}


def unstaffed(policies: PolicySet, reviewers: Reviewers, source: str) -> list[Problem]:
    """Pools a policy sends items to (its rules', adjudicators', escalation steps', fallback
    pools) that no reviewer in the reviewers file may decide for that domain."""
    warnings: list[Problem] = []
    defaults = policies.routing.review_defaults
    for domain, loaded in sorted(policies.policies.items()):
        used = loaded.policy.pool_names() | {e.pool for e in defaults.escalation}
        fallback = policies.fallback_pool(domain)
        used |= {fallback} if fallback else set()
        for pool in sorted(used):
            if not any(r.may_review(pool, domain) for r in reviewers):
                msg = (
                    f"domain '{domain}' sends items to pool '{pool}', which no reviewer in"
                    f" {source} may decide: they wait until an operator reassigns them"
                )
                warnings.append(Problem(loaded.source, "", None, msg, severity="warning"))
    return warnings


def lint(policies: PolicySet) -> list[Problem]:
    warnings: list[Problem] = []
    per_pool: dict[str, float] = defaultdict(float)
    for domain, loaded in sorted(policies.policies.items()):
        p = loaded.policy
        src = loaded.source

        def warn(path: str, message: str, source: str = src) -> None:
            warnings.append(Problem(source, path, None, message, severity="warning"))

        if p.sampling is not None and p.sampling.quota is not None:
            count = p.sampling.quota.count
            if count < MIN_RELIABLE_SAMPLE:
                warn(
                    "sampling.quota.count",
                    f"{count} cases per window give a wide confidence interval; "
                    f"{MIN_RELIABLE_SAMPLE} is the minimum for a production-grade estimate "
                    "(fine for a weekly calibration check, not for a quality figure)",
                )
        for name, rule in p.rules():
            if rule.rubric and rule.rubric not in policies.routing.rubrics:
                warn(f"{name}.rubric", f"rubric '{rule.rubric}' is not declared in routing.yaml:"
                     " reviewers see no criteria and any grades are taken")  # fmt: skip
            pool = policies.pools.get(rule.pool)
            if pool is not None and pool.reviewers < rule.reviewers:
                warn(
                    f"{name}.reviewers",
                    f"{rule.reviewers} distinct reviewers needed but pool "
                    f"'{pool.name}' has {pool.reviewers}: consensus can never be reached",
                )
        if p.expected_daily_volume is None and (
            p.sampling or p.deferred_review or p.mandatory_review
        ):
            warn("expected_daily_volume", f"not set: the review load of '{domain}' is unknown")
        for pool_name, weekly in weekly_review_load(p).items():
            per_pool[pool_name] += weekly
    for pool_name, weekly in sorted(per_pool.items()):
        pool = policies.pools.get(pool_name)
        if pool is None or weekly <= pool.cases_per_week:
            continue
        hours = weekly / pool.cases_per_hour
        warnings.append(
            Problem(
                "pools.yaml",
                f"pools.{pool_name}",
                None,
                f"policies send about {weekly:,.0f} reviews a week ({hours:,.0f} reviewer-hours) "
                f"but the pool has {pool.hours_per_week:,.0f} hours "
                f"({pool.cases_per_week:,.0f} cases) a week",
                severity="warning",
            )
        )
    return warnings


# -- simulate: replay recorded traffic offline ------------------------------------------------


@dataclass
class Simulation:
    routes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    rules: Counter[tuple[str, str]] = field(default_factory=Counter)
    pools: Counter[str] = field(default_factory=Counter)
    invalid: Counter[str] = field(default_factory=Counter)
    decisions: dict[str, Decision] = field(default_factory=dict)
    total: int = 0


def read_jsonl(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        for raw in handle:
            line = raw.strip()
            if line:
                yield line


def simulate(
    lines: Iterable[bytes], policies: PolicySet, *, now_ms: int | None = None
) -> Simulation:
    """Route every line as the gateway would; ``created_at`` stands in for the Kafka time."""
    start_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    ledger = MemoryLedger()
    sim = Simulation()
    for value in lines:
        sim.total += 1
        verdict = decode(value, max_bytes=10_000_000, max_id_length=4_096)
        if isinstance(verdict, Invalid):
            sim.invalid[verdict.reason] += 1
            continue
        ts = _timestamp_ms(verdict, start_ms)
        decision = decide(verdict, policies, timestamp_ms=ts, budgets=ledger)
        ledger.apply(verdict.id, decision.claims)
        sim.decisions[verdict.id] = decision
        sim.routes[decision.domain][decision.route] += 1
        sim.rules[(decision.domain, decision.rule)] += 1
        if decision.route in (Route.HOLD, Route.DELIVER_AND_REVIEW) and decision.pool:
            sim.pools[decision.pool] += 1
    return sim


def _timestamp_ms(record: InputRecord, default_ms: int) -> int:
    if record.created_at is None:
        return default_ms
    created = record.created_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return int(created.timestamp() * 1000)


def render_simulation(sim: Simulation, policies: PolicySet) -> str:
    routes = [Route.PASS, Route.DELIVER_AND_REVIEW, Route.HOLD, Route.DEADLETTER]
    lines = [f"{sim.total} records, policy set {policies.version}", ""]
    header = f"{'domain':24}" + "".join(f"{r.value:>20}" for r in routes)
    lines += [header, "-" * len(header)]
    for domain in sorted(sim.routes):
        counts = sim.routes[domain]
        lines.append(f"{domain:24}" + "".join(f"{counts[r]:>20}" for r in routes))
    if sim.invalid:
        lines += [
            "",
            "invalid records: " + ", ".join(f"{k} {v}" for k, v in sorted(sim.invalid.items())),
        ]
    lines += ["", f"{'pool':24}{'reviews':>10}{'hours':>10}{'cost USD':>12}"]
    for pool_name, n in sorted(sim.pools.items()):
        pool = policies.pools.get(pool_name)
        if pool is None or pool_name == UNASSIGNED:
            lines.append(f"{pool_name:24}{n:>10}{'-':>10}{'-':>12}")
            continue
        hours = n / pool.cases_per_hour
        lines.append(f"{pool_name:24}{n:>10}{hours:>10.1f}{hours * pool.cost_per_hour_usd:>12,.0f}")
    lines += ["", "rules fired:"]
    for (domain, rule), n in sorted(sim.rules.items()):
        lines.append(f"  {domain:24}{rule:22}{n:>8}")
    return "\n".join(lines)


def render_diff(old: Simulation, new: Simulation) -> str:
    changed = [
        (item_id, old.decisions[item_id], d)
        for item_id, d in new.decisions.items()
        if item_id in old.decisions
        and (old.decisions[item_id].route, old.decisions[item_id].pool) != (d.route, d.pool)
    ]
    lines = [f"{len(changed)} of {new.total} records change route or pool", ""]
    moves = Counter(
        (
            d_new.domain,
            f"{d_old.route.value}/{d_old.pool or '-'}",
            f"{d_new.route.value}/{d_new.pool or '-'}",
        )
        for _, d_old, d_new in changed
    )
    for (domain, before, after), n in moves.most_common():
        lines.append(f"  {domain:24}{before:>32} -> {after:<32}{n:>8}")
    for item_id, d_old, d_new in changed[:5]:
        lines.append(f"  e.g. {item_id}: {d_old.reasons[0].detail} -> {d_new.reasons[0].detail}")
    return "\n".join(lines)


# -- schema: for editors ----------------------------------------------------------------------

SCHEMAS: dict[str, type[BaseModel]] = {
    "policy": DomainPolicy,
    "pools": PoolFile,
    "routing": RoutingFile,
}


def json_schemas() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name, model in SCHEMAS.items():
        schema: dict[str, Any] = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"hitl-gateway/{name}.schema.json"
        out[f"{name}.schema.json"] = orjson.dumps(schema, option=orjson.OPT_INDENT_2) + b"\n"
    return out
