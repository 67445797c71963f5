"""The planner reproduces the guide's worked examples from the shipped traffic files."""

from __future__ import annotations

from pathlib import Path

import pytest

from hitl_gateway.cli import main
from hitl_gateway.planner import load_traffic, plan
from hitl_gateway.policy.loader import load_policy_set

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
