"""Which pool reviews an item: skill and language are both requirements; the policy's order
decides when no pool has both; a language nobody speaks goes to the fallback pool. Checked
on the shipped pools and policies, and on small hand-made ones."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from hitl_gateway.index_entries import IndexedHold
from hitl_gateway.models import HoldMeta, InputRecord, Route
from hitl_gateway.policy.budget import MemoryLedger
from hitl_gateway.policy.engine import decide
from hitl_gateway.policy.loader import PolicySet, load_policy_set
from hitl_gateway.policy.pools import Choice, choose, refusal, speaks
from hitl_gateway.policy.problems import PolicyError
from hitl_gateway.policy.schema import Pool
from hitl_gateway.review.reroute import destination

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SHIPPED = load_policy_set(CONFIGS / "policies")


def _choose(domain: str, rule: str, language: str | None, policies: PolicySet = SHIPPED) -> Choice:
    policy = policies.policies[domain].policy
    spec = policy.rule(rule)
    assert spec is not None
    return choose(
        language, rule, rule_pool=spec.pool, policy=policy, pools=policies.pools,
        default_fallback=policies.routing.review_defaults.fallback_pool,
    )  # fmt: skip


def test_a_pool_with_both_the_skill_and_the_language_wins() -> None:
    # support-chat's cascade wants general graders (skill general); native-de has both.
    got = _choose("support-chat", "confidence_cascade", "de-AT")
    assert got == Choice("native-de", "'de-AT' reviewed by native-de, which has skill general")
    assert _choose("support-chat", "confidence_cascade", "en") == Choice("general-graders")
    assert _choose("support-chat", "confidence_cascade", None) == Choice("general-graders")


def test_red_team_keeps_its_safety_reviewers_when_no_pool_has_both() -> None:
    # The defect: a German red-team item went to the translators.
    got = _choose("support-chat", "red_team", "de")
    assert got.pool == "red-team"
    assert (
        got.detail == "no pool has both 'de' and skill safety: skill first for red_team, red-team"
    )
    assert not got.fallback


def test_a_language_nobody_speaks_goes_to_the_fallback_pool() -> None:
    got = _choose("support-chat", "confidence_cascade", "pt-BR")
    assert got == Choice(
        "language-desk", "no pool speaks 'pt-BR': fallback pool language-desk", True
    )
    got = _choose("translations", "confidence_cascade", "pt-BR")  # its own fallback
    assert (got.pool, got.fallback) == ("language-desk", True)


def test_the_decision_names_the_choice_in_its_reasons_and_holds_fallbacks() -> None:
    record = InputRecord(id="r", domain="support-chat", confidence=0.9, language="de",
                         metadata={"red_team": "true"})  # fmt: skip
    d = decide(record, SHIPPED, timestamp_ms=0, budgets=MemoryLedger())
    assert (d.rule, d.pool, d.language, d.fallback) == ("red_team", "red-team", "de", False)
    assert d.reasons[-1].rule == "language"
    pt = InputRecord(id="p", domain="translations", confidence=0.1, language="pt-BR")
    d = decide(pt, SHIPPED, timestamp_ms=0, budgets=MemoryLedger())
    # translations reviews after delivery, but nobody who speaks it has seen it: held.
    assert (d.pool, d.route, d.fallback) == ("language-desk", Route.HOLD, True)


POOLS = """\
pools:
  - {name: safety, languages: [en], skills: [safety], cost_per_hour_usd: 100, cases_per_hour: 10, reviewers: 1, hours_per_week: 10}
  - {name: de-cheap, languages: [de], skills: [general], cost_per_hour_usd: 40, cases_per_hour: 10, reviewers: 1, hours_per_week: 10}
  - {name: de-safety, languages: [de], skills: [safety, general], cost_per_hour_usd: 90, cases_per_hour: 10, reviewers: 1, hours_per_week: 10}
  - {name: de-safety-cheap, languages: [de], skills: [safety], cost_per_hour_usd: 80, cases_per_hour: 10, reviewers: 1, hours_per_week: 10}
  - {name: desk, languages: ["*"], skills: [general], cost_per_hour_usd: 90, cases_per_hour: 10, reviewers: 1, hours_per_week: 10}
"""  # noqa: E501


def _policies(tmp_path: Path, policy: str, routing: str = "{}\n") -> PolicySet:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "pools.yaml").write_text(POOLS)
    (tmp_path / "routing.yaml").write_text(routing)
    (tmp_path / "policies" / "x.yaml").write_text("domain: x\n" + policy)
    return load_policy_set(tmp_path / "policies")


CHAIN = "  escalation: [{after: 1h, pool: safety}]\n"


def test_the_cheapest_pool_with_both_unless_the_domain_maps_the_language(tmp_path: Path) -> None:
    policies = _policies(tmp_path, "red_team:\n  metadata: {t: 'y'}\n  pool: safety\n  sla: 1h\n"
                         + CHAIN)  # fmt: skip
    assert _choose("x", "red_team", "de", policies).pool == "de-safety-cheap"
    mapped = _policies(tmp_path, "red_team:\n  metadata: {t: 'y'}\n  pool: safety\n  sla: 1h\n"
                       + CHAIN + "languages:\n  pools: {de: de-safety}\n")  # fmt: skip
    assert _choose("x", "red_team", "de", mapped).pool == "de-safety"


def test_language_first_is_the_policys_choice(tmp_path: Path) -> None:
    body = ("red_team:\n  metadata: {t: 'y'}\n  pool: desk\n  sla: 1h\n" + CHAIN
            + "languages:\n  skill_first: []\n")  # fmt: skip
    # desk serves every language: no choice to make.
    assert _choose("x", "red_team", "ja", _policies(tmp_path, body)) == Choice("desk")
    cascade = ("confidence_cascade: {below: 0.5, pool: safety, sla: 1h, escalation: [{after: 1h,"
               " pool: safety}]}\nlanguages: {fallback: desk}\n")  # fmt: skip
    policies = _policies(tmp_path, cascade)
    got = _choose("x", "confidence_cascade", "de", policies)  # no pool has both: language first
    assert got.pool == "de-safety-cheap"  # has safety: both after all
    got = _choose("x", "confidence_cascade", "fr", policies)
    assert (got.pool, got.fallback) == ("desk", True)


def test_policy_check_refuses_holds_without_a_way_out(tmp_path: Path) -> None:
    cascade = "confidence_cascade: {below: 0.5, pool: safety, sla: 1h}\n"
    with pytest.raises(PolicyError) as caught:
        _policies(tmp_path, cascade)
    messages = [p.message for p in caught.value.problems]
    assert any("holds items but has no escalation chain" in m for m in messages)
    assert any("no fallback pool for languages no pool speaks" in m for m in messages)
    # Inherited from routing.yaml, both are satisfied.
    defaults = "review_defaults: {fallback_pool: desk, escalation: [{after: 1h, pool: safety}]}\n"
    assert _policies(tmp_path, cascade, defaults).policies["x"]
    # A fallback pool that does not serve every language is no way out.
    with pytest.raises(PolicyError, match="must serve every language"):
        _policies(
            tmp_path, cascade, defaults.replace("fallback_pool: desk", "fallback_pool: safety")
        )
    with pytest.raises(PolicyError, match="no longer accepted"):
        _policies(tmp_path, cascade + "languages: {fallback: hold_unassigned}\n", defaults)


def test_refusal_names_why_a_pool_cannot_take_an_item(tmp_path: Path) -> None:
    policy = SHIPPED.policies["support-chat"].policy
    pools = SHIPPED.pools
    assert refusal("native-ja", language="en", rule_pool="general-graders", policy=policy,
                   pools=pools) == "pool 'native-ja' does not serve language 'en'"  # fmt: skip
    assert refusal("review-leads", language="en", rule_pool="general-graders", policy=policy,
                   pools=pools) is None  # fmt: skip
    assert refusal("lawyers", language="en", rule_pool="general-graders", policy=policy,
                   pools=pools) == (
        "pool 'lawyers' is not one of domain 'support-chat''s pools and lacks the skills of"
        " general-graders"
    )  # fmt: skip
    assert "not defined" in (refusal("nobody", language=None, rule_pool=None, policy=policy,
                                     pools=pools) or "")  # fmt: skip


def test_speaks_primary_tags_and_any() -> None:
    de = Pool(name="de", languages=("de",), cost_per_hour_usd=1, cases_per_hour=1, reviewers=1,
              hours_per_week=1)  # fmt: skip
    assert speaks(de, "de-AT")
    assert not speaks(de, "en")
    pt_br = de.model_copy(update={"languages": ("pt-BR",)})
    assert speaks(pt_br, "pt-br")
    assert not speaks(pt_br, "pt")
    anyone = de.model_copy(update={"languages": ("*",)})
    assert speaks(anyone, "tlh")


def test_any_rule_may_ask_for_consensus(tmp_path: Path) -> None:
    cascade = ("confidence_cascade: {below: 0.5, pool: safety, sla: 1h, reviewers: 2,"
               " adjudicator_pool: desk, escalation: [{after: 1h, pool: safety}]}\n"
               "languages: {fallback: desk}\n")  # fmt: skip
    policies = _policies(tmp_path, cascade)
    record = InputRecord(id="c", domain="x", confidence=0.1)
    d = decide(record, policies, timestamp_ms=0, budgets=MemoryLedger())
    assert (d.rule, d.reviewers, d.adjudicator_pool) == ("confidence_cascade", 2, "desk")
    with pytest.raises(PolicyError, match="reviewers > 1 needs an adjudicator_pool"):
        _policies(tmp_path, cascade.replace(" adjudicator_pool: desk,", ""))


def _legacy(pool: str, record_language: str | None, **meta: object) -> IndexedHold:
    fields = {"item_id": "h", "domain": "support-chat", "pool": pool, "reviewers": 1,
              "content_hash": "sha256:x", "held_at_ms": 0, "rule": "confidence_cascade",
              **meta}  # fmt: skip
    value = orjson.dumps({"id": "h", "domain": "support-chat", "language": record_language})
    return IndexedHold(HoldMeta.of(fields), value, b"h", [], 0)


def test_the_rerouter_moves_only_holds_waiting_for_a_pool() -> None:
    # Held "unassigned" by an earlier version (its meta has no language: read from the value).
    moved = destination(_legacy("unassigned", "de"), SHIPPED)
    assert moved is not None
    assert (moved.pool, moved.fallback) == ("native-de", False)
    still = destination(_legacy("unassigned", "pt-BR"), SHIPPED)
    assert still is not None
    assert (still.pool, still.fallback) == ("language-desk", True)
    # Waiting in the fallback pool, and nobody speaks it yet: stays.
    assert destination(_legacy("language-desk", "pt-BR", fallback=True), SHIPPED) is None
    # An item in an ordinary pool, one reassigned by an operator, one in adjudication: left.
    assert destination(_legacy("general-graders", "pt-BR"), SHIPPED) is None
    assert destination(_legacy("language-desk", "de", fallback=False), SHIPPED) is None
    assert destination(_legacy("unassigned", "de", stage="adjudication"), SHIPPED) is None
    # A pool the pools file no longer defines: back to where the policy sends it.
    gone = destination(_legacy("native-xx", "en", language="en"), SHIPPED)
    assert gone is not None
    assert gone.pool == "general-graders"
