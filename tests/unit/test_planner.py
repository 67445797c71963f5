"""The planner reproduces the guide's worked examples from the shipped traffic files, splits
reviews by language the way the engine routes them, and charges adjudication."""

from __future__ import annotations

from pathlib import Path

import pytest

from hitl_gateway.cli import main
from hitl_gateway.errors import ConfigError
from hitl_gateway.planner import Line, Plan, plan, render
from hitl_gateway.policy.loader import load_policy_set
from hitl_gateway.traffic import TrafficProfile, load_traffic

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
POLICIES = load_policy_set(CONFIGS / "policies")


def test_healthcare_summaries() -> None:
    result = plan(load_traffic(CONFIGS / "traffic" / "healthcare.yaml"), POLICIES)
    clinicians = result.pools["clinicians"]
    assert clinicians.reviews_per_day == 200
    assert clinicians.hours_per_day == pytest.approx(200 / 30)  # 6.7 reviewer-hours a day
    assert 1 < clinicians.headcount < 2  # "1 to 2 part-time reviewers"
    assert clinicians.cost_per_day == pytest.approx(200 / 30 * 200)  # $1,333 a day
    assert result.reviewed_share["clinical-summaries"] == 1.0
    assert result.feasible


def test_platform_calibrates_the_judge_on_50_cases_a_week() -> None:
    result = plan(load_traffic(CONFIGS / "traffic" / "platform-10m.yaml"), POLICIES)
    graders = result.pools["calibration-graders"]
    assert graders.reviews_per_day * 7 == pytest.approx(50)
    assert graders.hours_per_week == pytest.approx(5)  # 5 hours of reviewer time a week
    assert graders.cost_per_day * 7 == pytest.approx(400)  # at $80 an hour: $400 a week
    assert result.feasible


def test_reviewing_one_percent_of_10m_a_day_is_infeasible() -> None:
    blanket = load_policy_set(CONFIGS / "examples" / "blanket-one-percent" / "policies")
    result = plan(load_traffic(CONFIGS / "traffic" / "platform-10m.yaml"), blanket)
    graders = result.pools["graders"]
    assert graders.reviews_per_day == pytest.approx(100_000)  # 1% of 10M
    assert graders.hours_per_day == pytest.approx(100_000 / 30)  # thousands of hours a day
    assert not result.feasible
    assert any("more than any review team" in problem for problem in graders.problems)


def test_active_learning_is_capped_at_800_a_week() -> None:
    result = plan(load_traffic(CONFIGS / "traffic" / "classifier.yaml"), POLICIES)
    (line,) = result.lines
    assert line.rule == "active_learning"
    assert 3000 * 0.05 * 7 > 800  # 5% below 0.6 would be 1,050 a week...
    assert line.reviews_per_day * 7 == pytest.approx(800)  # ...the budget caps it at 800


def test_cli_prints_the_plan_and_fails_on_an_infeasible_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["plan", "--traffic", str(CONFIGS / "traffic" / "healthcare.yaml")]) == 0
    assert "plan: feasible" in capsys.readouterr().out
    blanket = CONFIGS / "examples" / "blanket-one-percent" / "policies"
    args = [
        "plan",
        "--traffic",
        str(CONFIGS / "traffic" / "platform-10m.yaml"),
        "--policies",
        str(blanket),
    ]
    assert main(args) == 1
    assert "INFEASIBLE" in capsys.readouterr().out


def test_unknown_domain_in_traffic_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    traffic = tmp_path / "t.yaml"
    traffic.write_text("domains:\n  nowhere: {records_per_day: 5}\n")
    assert main(["plan", "--traffic", str(traffic)]) == 2
    assert "domain 'nowhere', which no policy covers" in capsys.readouterr().err


def _traffic(domains: dict[str, object]) -> TrafficProfile:
    return TrafficProfile.model_validate({"domains": domains})


def _line(result: Plan, rule: str, language: str | None) -> Line:
    (line,) = [
        ln
        for ln in result.lines
        if ln.rule == rule and ln.language == language and not ln.adjudication
    ]
    return line


def test_language_shares_go_to_the_pools_the_engine_chooses() -> None:
    support = {
        "records_per_day": 10_000,
        "confidence": [{"below": 0.6, "share": 0.1}],
        "tags": {"red_team": 0.01},
        "languages": {"en": 0.5, "de": 0.5},
    }
    result = plan(_traffic({"support-chat": support}), POLICIES)
    # 1% red-team tagged: 100 a day; German ones stay with red team (red_team is skill first).
    assert _line(result, "red_team", "de").pool == "red-team"
    assert _line(result, "red_team", "de").reviews_per_day == pytest.approx(50)
    # 10% of the other 9,900 below 0.6: 990 a day, half German, to the native pool.
    assert _line(result, "confidence_cascade", "de").pool == "native-de"
    assert _line(result, "confidence_cascade", "de").reviews_per_day == pytest.approx(495)
    assert _line(result, "confidence_cascade", "en").pool == "general-graders"
    assert result.pools["native-de"].hours_per_day == pytest.approx(495 / 35)
    assert result.pools["red-team"].reviews_per_day == pytest.approx(100)
    assert not any(p.warnings for p in result.pools.values())
    assert not result.warnings


def test_a_language_no_pool_speaks_goes_to_the_fallback_pool_and_is_flagged() -> None:
    translations = {
        "records_per_day": 1_000,
        "confidence": [{"below": 0.75, "share": 0.2}],
        "languages": {"pt-BR": 0.1},  # the other 90% carry no language: the rule's pool
    }
    result = plan(_traffic({"translations": translations}), POLICIES)
    pt = _line(result, "confidence_cascade", "pt-BR")
    assert (pt.pool, pt.fallback, pt.reviews_per_day) == ("language-desk", True, pytest.approx(20))
    assert _line(result, "confidence_cascade", None).reviews_per_day == pytest.approx(180)
    flag = "translations: no pool speaks pt-BR: 20.0 reviews/day go to the fallback pool"
    assert result.pools["language-desk"].warnings == [f"{flag} language-desk"]
    assert f"  WARNING: {flag} language-desk" in render(result)
    assert result.feasible  # a warning, not a reason to fail the plan


def test_the_shipped_multilingual_profile_flags_pt_br() -> None:
    result = plan(load_traffic(CONFIGS / "traffic" / "multilingual.yaml"), POLICIES)
    desk = result.pools["language-desk"].warnings
    assert [w.split(":")[0] for w in desk] == ["support-chat", "translations"]
    # No pool lists pt-BR, so the red team's pt-BR share is flagged where it lands too.
    (red,) = result.pools["red-team"].warnings
    assert red.startswith("support-chat: no pool speaks pt-BR:")
    assert red.endswith("go to red-team, which does not speak it either")
    assert result.feasible


def test_adjudication_is_charged_to_the_adjudicator_pool() -> None:
    # docs/planning.md's worked example: 120 drafts a day, two lawyers each, 10% disagreement.
    result = plan(load_traffic(CONFIGS / "traffic" / "legal.yaml"), POLICIES)
    lawyers, counsel = result.pools["lawyers"], result.pools["senior-counsel"]
    assert lawyers.reviews_per_day == 240  # 120 items x 2 reviewers
    assert lawyers.hours_per_day == pytest.approx(16)  # at 15 an hour
    assert lawyers.cost_per_day == pytest.approx(5_600)  # at $350 an hour
    assert lawyers.adjudications_per_day == 0
    assert counsel.reviews_per_day == counsel.adjudications_per_day == pytest.approx(12)
    assert counsel.hours_per_day == counsel.adjudication_hours_per_day == pytest.approx(1.2)
    assert counsel.cost_per_day == pytest.approx(600)  # at $500 an hour
    assert result.reviewed_share["legal-drafts"] == 1.0  # items, not reviews
    assert "  includes 12.0 adjudications/day (1.2 hours/day)" in render(result)
    assert result.feasible


POOLS = """\
pools:
  - {name: graders, languages: [en], cost_per_hour_usd: 40, cases_per_hour: 20,
     reviewers: 5, hours_per_week: 200}
  - {name: leads, languages: [en], cost_per_hour_usd: 100, cases_per_hour: 10,
     reviewers: 1, hours_per_week: 40}
"""


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """Two English pools, no fallback pool; a sampled domain reviewed three times over."""
    (tmp_path / "pools.yaml").write_text(POOLS)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "chat.yaml").write_text(
        "domain: chat\n"
        "sampling: {rate: 0.1, pool: graders, sla: 1d, reviewers: 3,\n"
        "           adjudicator_pool: leads, expected_disagreement: 0.25}\n"
    )
    return tmp_path / "policies"


def test_consensus_on_any_rule_multiplies_reviews_and_adds_adjudication(small: Path) -> None:
    result = plan(_traffic({"chat": {"records_per_day": 1_000}}), load_policy_set(small))
    graders, leads = result.pools["graders"], result.pools["leads"]
    assert graders.reviews_per_day == pytest.approx(300)  # 100 items x 3 reviewers
    assert graders.hours_per_day == pytest.approx(15)
    assert leads.adjudications_per_day == pytest.approx(25)  # 100 items x 0.25
    assert leads.hours_per_day == pytest.approx(2.5)
    assert leads.cost_per_day == pytest.approx(250)
    assert result.reviewed_share["chat"] == pytest.approx(0.1)


def test_a_language_no_pool_lists_is_flagged(small: Path) -> None:
    chat = {"records_per_day": 1_000, "languages": {"en": 0.9, "sw": 0.1}}
    result = plan(_traffic({"chat": chat}), load_policy_set(small))
    # No pool lists Swahili and there is no fallback: the graders keep it, flagged.
    sw = _line(result, "sampling", "sw")
    assert (sw.pool, sw.fallback, sw.reviews_per_day) == ("graders", False, pytest.approx(30))
    assert result.pools["graders"].warnings == [
        "chat: no pool speaks sw: 30.0 reviews/day go to graders, which does not speak it either"
    ]


def test_an_unlisted_language_nobody_reviews_yet_is_still_flagged() -> None:
    translations = {
        "records_per_day": 1_000,
        "confidence": [{"below": 0.75, "share": 0.0}],  # the cascade takes nothing
        "languages": {"de": 0.5, "sw": 0.5},
    }
    result = plan(_traffic({"translations": translations}), POLICIES)
    assert result.warnings == [
        "translations: no pool in pools.yaml lists sw (50.0% of its traffic; no rule reviews"
        " it now)"
    ]
    assert "\nWARNING: translations: no pool in pools.yaml lists sw" in render(result)


def test_language_shares_above_one_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("domains:\n  chat: {records_per_day: 5, languages: {en: 0.8, de: 0.3}}\n")
    with pytest.raises(ConfigError, match=r"language shares add up to 1\.1, more than 1"):
        load_traffic(path)
