"""The progress watchdog behind /readyz, with fakes for the index and the pipeline."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from hitl_gateway.calibration.store import Summary
from hitl_gateway.metrics import GatewayMetrics
from hitl_gateway.observe import Observer
from hitl_gateway.policy.store import PolicyStore
from hitl_gateway.settings import PolicySettings

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


class FakeIndex:
    async def pools(self) -> set[str]:
        return {"clinicians", "unassigned"}

    async def backlog(self, pool: str, now_ms: int) -> tuple[int, int | None, int]:
        if pool == "unassigned":
            return 2, now_ms - 1_000, 0
        return (3, now_ms - 60_000, 1) if pool == "clinicians" else (0, None, 0)

    async def domain_counts(self, domains: list[str]) -> dict[str, int]:
        return dict.fromkeys(domains, 0)


class FakeCalibration:
    def __init__(self, summaries: list[Summary] | None = None) -> None:
        self._summaries = summaries or []

    async def summaries(self) -> list[Summary]:
        return self._summaries


class FakePipeline:
    def __init__(self, lag: int, since_commit_s: float, reachable: bool = True) -> None:
        self._lag = lag
        self.last_commit_monotonic = time.monotonic() - since_commit_s
        self._reachable = reachable

    async def broker_reachable(self) -> bool:
        return self._reachable

    async def lag(self) -> list[tuple[TopicPartition, int, int]]:
        return [(TopicPartition("in", 0), self._lag, 0)]


def _observer(
    pipeline: Any, summaries: list[Summary] | None = None
) -> tuple[Observer, GatewayMetrics]:
    metrics = GatewayMetrics()
    policies = PolicyStore(PolicySettings(dir=CONFIGS / "policies", reload_interval_s=0), metrics)
    calibration: Any = FakeCalibration(summaries)
    index: Any = FakeIndex()
    observer = Observer(
        metrics, index, calibration, policies, pipeline, interval_s=1, stall_after_s=60
    )
    return observer, metrics


async def test_calibration_summaries_become_gauges_and_insufficient_data_has_no_figure() -> None:
    judge = {"domain": "support-chat", "stratum": "all"}
    thin = {"domain": "legal-drafts", "stratum": "all"}
    observer, metrics = _observer(
        FakePipeline(lag=0, since_commit_s=0),
        [
            Summary(
                "judge",
                judge,
                {
                    "status": "recalibrate",
                    "cases": "250",
                    "agreement": "0.8",
                    "kappa": "0.5",
                    "low": "0.75",
                    "high": "0.84",
                },
            ),
            Summary("judge", thin, {"status": "insufficient_data", "cases": "12"}),
            Summary(
                "consensus",
                {"pool": "p", "reviewer": "r1"},
                {"status": "flagged", "agreement": "0.5", "ratings": "40"},
            ),
            Summary(
                "alpha",
                {"pool": "p", "rubric": "-", "dimension": "verdict"},
                {"alpha": "0.61", "items": "40"},
            ),
            Summary("gold", {"pool": "p", "reviewer": "r1"}, {"accuracy": "0.9", "items": "10"}),
        ],
    )
    await observer.sample()
    value = metrics.registry.get_sample_value
    assert value("hitl_judge_agreement_ratio", judge) == 0.8
    assert value("hitl_judge_agreement_lower_bound", judge) == 0.75
    assert value("hitl_judge_calibration_status", {**judge, "status": "recalibrate"}) == 1
    assert value("hitl_judge_calibration_status", {**judge, "status": "calibrated"}) == 0
    assert value("hitl_judge_agreement_ratio", thin) is None
    assert value("hitl_judge_cases", thin) == 12
    assert value("hitl_judge_calibration_status", {**thin, "status": "insufficient_data"}) == 1
    assert value("hitl_reviewer_flagged", {"pool": "p", "reviewer": "r1"}) == 1
    assert value("hitl_reviewer_consensus_agreement_ratio", {"pool": "p", "reviewer": "r1"}) == 0.5
    assert (
        value("hitl_reviewer_alpha", {"pool": "p", "rubric": "-", "dimension": "verdict"}) == 0.61
    )
    assert value("hitl_reviewer_gold_accuracy_ratio", {"pool": "p", "reviewer": "r1"}) == 0.9


async def test_pool_agreement_targets_and_an_alpha_with_every_rating_left_out() -> None:
    grade = {"pool": "p", "rubric": "helpfulness", "dimension": "grade"}
    summaries = [Summary("alpha", grade, {"alpha": "0.7", "items": "60", "excluded": "3"})]
    observer, metrics = _observer(FakePipeline(lag=0, since_commit_s=0), summaries)
    await observer.sample()
    value = metrics.registry.get_sample_value
    assert value("hitl_reviewer_alpha_target", {"pool": "clinicians"}) == 0.8
    assert value("hitl_reviewer_alpha_min_items", {"pool": "clinicians"}) == 50
    assert value("hitl_reviewer_alpha", grade) == 0.7
    assert value("hitl_reviewer_alpha_excluded_ratings", grade) == 3
    # Later every rating in the window is outside the rubric's grades: no stale figure.
    summaries[:] = [Summary("alpha", grade, {"alpha": "", "items": "0", "excluded": "9"})]
    await observer.sample()
    assert value("hitl_reviewer_alpha", grade) is None
    assert value("hitl_reviewer_alpha_items", grade) == 0
    assert value("hitl_reviewer_alpha_excluded_ratings", grade) == 9


async def test_waiting_records_and_no_commit_for_long_is_a_stall() -> None:
    observer, metrics = _observer(FakePipeline(lag=500, since_commit_s=120))
    await observer.sample()
    assert observer.stalled
    assert (
        metrics.registry.get_sample_value(
            "hitl_consumer_lag_records", {"topic": "in", "partition": "0"}
        )
        == 500
    )


async def test_idle_without_records_is_not_a_stall() -> None:
    observer, _ = _observer(FakePipeline(lag=0, since_commit_s=3_600))
    await observer.sample()
    assert not observer.stalled


async def test_backlog_gauges_and_an_unreachable_broker() -> None:
    observer, metrics = _observer(FakePipeline(lag=0, since_commit_s=1, reachable=False))
    await observer.sample()
    assert not observer.kafka_ok
    get = metrics.registry.get_sample_value
    assert get("hitl_holds", {"pool": "clinicians"}) == 3
    assert get("hitl_holds_past_sla", {"pool": "clinicians"}) == 1
    assert 59 <= (get("hitl_oldest_hold_age_seconds", {"pool": "clinicians"}) or 0) <= 70
    assert get("hitl_review_backlog_seconds", {"pool": "clinicians"}) == 3 / 30 * 3_600
    # Items no pool can take are visible too; with no pool definition, no capacity figures.
    assert get("hitl_holds", {"pool": "unassigned"}) == 2
    assert get("hitl_review_backlog_seconds", {"pool": "unassigned"}) is None
