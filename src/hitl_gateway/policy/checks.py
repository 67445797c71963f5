"""Cross-checks of a policy against the pools and routing files: every pool it names exists,
language pools speak their language, and every hold has a way out (an escalation chain for
each rule that holds, a fallback pool for a language no pool speaks)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from hitl_gateway.policy.pools import ANY_LANGUAGE, speaks
from hitl_gateway.policy.problems import Problem, line_of
from hitl_gateway.policy.rules import ReviewAction, Reviewed
from hitl_gateway.policy.schema import DomainPolicy, Pool, RoutingFile


def cross_check(
    path: Path,
    text: str,
    policy: DomainPolicy,
    pools: Mapping[str, Pool] | None,
    routing: RoutingFile | None,
) -> list[Problem]:
    """A policy against the pools and routing files (when they loaded)."""
    if pools is None:
        return []
    problems = _check_pools(path, text, policy, pools)
    if routing is not None:
        problems += _check_ways_out(path, text, policy, routing, pools)
    return problems


def _check_pools(
    path: Path, text: str, policy: DomainPolicy, pools: Mapping[str, Pool]
) -> list[Problem]:
    problems = [
        Problem(str(path), "", None, f"pool '{name}' is not defined in pools.yaml")
        for name in sorted(policy.pool_names() - set(pools))
    ]
    fallback = pools.get(policy.languages.fallback or "")
    if fallback is not None and ANY_LANGUAGE not in fallback.languages:
        line = line_of(text, ["languages", "fallback"])
        msg = f"fallback pool '{fallback.name}' must serve every language (languages: ['*'])"
        problems.append(Problem(str(path), "languages.fallback", line, msg))
    for language, pool_name in policy.languages.pools.items():
        pool = pools.get(pool_name)
        if pool is not None and not speaks(pool, language):
            line = line_of(text, ["languages", "pools", language])
            msg = f"pool '{pool_name}' does not list language '{language}'"
            problems.append(Problem(str(path), f"languages.pools.{language}", line, msg))
    return problems


def _holds(name: str, rule: Reviewed) -> bool:
    """Whether a rule can keep an output from users until a reviewer decides."""
    return name == "mandatory_review" or getattr(rule, "action", None) is ReviewAction.HOLD


def _serves_all(pool: Pool | None, policy: DomainPolicy) -> bool:
    if pool is None:
        return True  # reported as an undefined pool already
    return ANY_LANGUAGE in pool.languages or (not pool.languages and not policy.languages.pools)


def _check_ways_out(
    path: Path, text: str, policy: DomainPolicy, routing: RoutingFile, pools: Mapping[str, Pool]
) -> list[Problem]:
    """Every hold has a way out: a fallback pool for languages no pool speaks, and an
    escalation chain (its own or routing.yaml's) for each rule that holds."""
    problems: list[Problem] = []
    holding = [(name, rule) for name, rule in policy.rules() if _holds(name, rule)]
    for name, rule in holding:
        chain = (
            rule.escalation if rule.escalation is not None else routing.review_defaults.escalation
        )
        if not chain:
            msg = (
                "holds items but has no escalation chain: declare escalation, or"
                " review_defaults.escalation in routing.yaml"
            )
            problems.append(Problem(str(path), name, line_of(text, [name]), msg))
    # A language-first rule that holds, whose pool does not serve every language, needs
    # somewhere to send a language no pool speaks (skill-first rules keep their pool).
    open_ended = [
        name for name, rule in holding
        if name not in policy.languages.skill_first
        and not _serves_all(pools.get(rule.pool), policy)
    ]  # fmt: skip
    if (
        open_ended
        and policy.languages.fallback is None
        and routing.review_defaults.fallback_pool is None
    ):
        msg = (
            f"no fallback pool for languages no pool speaks ({', '.join(open_ended)} would hold"
            " them with nobody to review): set languages.fallback, or"
            " review_defaults.fallback_pool in routing.yaml"
        )
        problems.append(Problem(str(path), "languages.fallback", line_of(text, ["languages"]), msg))
    # A rule that delivers, language first, holds what goes to the fallback pool: that hold
    # needs an escalation chain too.
    fallback = policy.languages.fallback or routing.review_defaults.fallback_pool
    for name, rule in policy.rules():
        chain = (
            rule.escalation if rule.escalation is not None else routing.review_defaults.escalation
        )
        if (
            fallback is not None
            and not _holds(name, rule)
            and name not in policy.languages.skill_first
            and not _serves_all(pools.get(rule.pool), policy)
            and not chain
        ):
            msg = (
                f"sends a language no pool speaks to the fallback pool {fallback}, where it is"
                " held, but has no escalation chain: declare escalation, or"
                " review_defaults.escalation in routing.yaml"
            )
            problems.append(Problem(str(path), name, line_of(text, [name]), msg))
    return problems


def check_defaults(path: Path, routing: RoutingFile, pools: Mapping[str, Pool]) -> list[Problem]:
    problems: list[Problem] = []
    defaults = routing.review_defaults
    named = [("review_defaults.fallback_pool", defaults.fallback_pool)] + [
        (f"review_defaults.escalation.{n}.pool", e.pool) for n, e in enumerate(defaults.escalation)
    ]
    for field, name in named:
        if name is not None and name not in pools:
            problems.append(
                Problem(str(path), field, None, f"pool '{name}' is not defined in pools.yaml")
            )
    fallback = pools.get(defaults.fallback_pool or "")
    if fallback is not None and ANY_LANGUAGE not in fallback.languages:
        msg = f"fallback pool '{fallback.name}' must serve every language (languages: ['*'])"
        problems.append(Problem(str(path), "review_defaults.fallback_pool", None, msg))
    return problems
