"""Which pool reviews an item: the rule's pool (its skill) and the item's language are both
requirements (pure; routing, the re-router and reassignment all ask here).

1. No language, or the rule's pool serves it: the rule's pool.
2. Else a pool that has both: the domain's native-speaker pool for the language if it has
   every skill of the rule's pool, else the cheapest pool that lists the language and has
   those skills (a pool added to pools.yaml later is found here).
3. No pool has both: the policy chooses. Rules in ``languages.skill_first`` (by default
   mandatory_review, red_team and pre_launch: experts were asked for) keep the rule's pool;
   the others go to a pool that speaks the language (the domain's own first).
4. No pool speaks the language: the fallback pool (``languages.fallback``, else routing.yaml's
   ``review_defaults.fallback_pool``), flagged so the metric, the alert and the re-router see it.

Every choice other than 1 says why in the item's reasons.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hitl_gateway.policy.schema import DomainPolicy, Pool

ANY_LANGUAGE = "*"


@dataclass(frozen=True, slots=True)
class Choice:
    pool: str
    detail: str | None = None  # why, when the rule's pool was not simply taken
    fallback: bool = False  # no pool speaks the language: a fallback pool took it


def speaks(pool: Pool, language: str) -> bool:
    """Whether ``pool`` lists ``language``: ``de`` serves ``de-AT``; ``pt-BR`` alone not
    ``pt``; ``*`` serves every language."""
    primary = language.split("-", maxsplit=1)[0].lower()
    spoken = {lang.lower() for lang in pool.languages}
    return ANY_LANGUAGE in spoken or language.lower() in spoken or primary in spoken


def serves(pool: Pool, language: str, policy: DomainPolicy) -> bool:
    """Whether ``pool`` can review a ``language`` item of ``policy``'s domain. A pool that lists
    no languages serves any, unless the domain routes by language."""
    if not pool.languages:
        return not policy.languages.pools
    return speaks(pool, language)


def fallback_pool(policy: DomainPolicy, default: str | None) -> str | None:
    return policy.languages.fallback or default


def choose(
    language: str | None,
    rule: str,
    *,
    rule_pool: str,
    policy: DomainPolicy,
    pools: Mapping[str, Pool],
    default_fallback: str | None,
) -> Choice:
    home = pools.get(rule_pool)
    if language is None or home is None or serves(home, language, policy):
        return Choice(rule_pool)
    routes = policy.languages.pools
    own = routes.get(language) or routes.get(language.split("-", maxsplit=1)[0])
    skills = set(home.skills)
    speakers = _speakers(language, pools, own)
    both = next((name for name in speakers if skills <= set(pools[name].skills)), None)
    skill = f"skill {', '.join(sorted(skills)) or '(none)'}"
    need = f"'{language}' and {skill}"
    if both is not None:
        return Choice(both, f"'{language}' reviewed by {both}, which has {skill}")
    if rule in policy.languages.skill_first:
        return Choice(rule_pool, f"no pool has both {need}: skill first for {rule}, {rule_pool}")
    if speakers:
        return Choice(speakers[0], f"no pool has both {need}: language first, {speakers[0]}")
    fallback = fallback_pool(policy, default_fallback)
    if fallback is None:  # the loader refuses such a policy; kept fail-closed regardless
        return Choice(rule_pool, f"no pool speaks '{language}' and no fallback: {rule_pool}")
    return Choice(fallback, f"no pool speaks '{language}': fallback pool {fallback}", True)


def _speakers(language: str, pools: Mapping[str, Pool], own: str | None) -> list[str]:
    """Pools that list the language: the domain's own first, then the cheapest."""
    listed = sorted(
        (p.cost_per_hour_usd, name)
        for name, p in pools.items()
        if name != own and p.languages and ANY_LANGUAGE not in p.languages and speaks(p, language)
    )
    first = [own] if own is not None and own in pools else []
    return first + [name for _, name in listed]


def refusal(
    pool_name: str,
    *,
    language: str | None,
    rule_pool: str | None,
    policy: DomainPolicy,
    pools: Mapping[str, Pool],
) -> str | None:
    """Why ``pool_name`` cannot take an item of ``policy``'s domain in ``language`` whose rule
    sent it to ``rule_pool`` (None: it can). It must exist, serve the language, and either be
    one of the domain's pools or have every skill of the rule's pool."""
    pool = pools.get(pool_name)
    if pool is None:
        return f"pool '{pool_name}' is not defined in pools.yaml"
    if language is not None and not serves(pool, language, policy):
        return f"pool '{pool_name}' does not serve language '{language}'"
    home = pools.get(rule_pool or "")
    skilled = home is not None and set(home.skills) <= set(pool.skills)
    if pool_name not in policy.pool_names() and not skilled:
        return (
            f"pool '{pool_name}' is not one of domain '{policy.domain}''s pools and lacks"
            f" the skills of {rule_pool}"
        )
    return None
