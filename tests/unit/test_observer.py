"""The progress watchdog behind /readyz, with fakes for the index and the pipeline."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

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


class FakePipeline:
    def __init__(self, lag: int, since_commit_s: float, reachable: bool = True) -> None:
        self._lag = lag
        self.last_commit_monotonic = time.monotonic() - since_commit_s
        self._reachable = reachable

    async def broker_reachable(self) -> bool:
        return self._reachable

    async def lag(self) -> list[tuple[TopicPartition, int, int]]:
        return [(TopicPartition("in", 0), self._lag, 0)]


def _observer(pipeline: Any) -> tuple[Observer, GatewayMetrics]:
    metrics = GatewayMetrics()
    policies = PolicyStore(PolicySettings(dir=CONFIGS / "policies", reload_interval_s=0), metrics)
    observer = Observer(metrics, FakeIndex(), policies, pipeline, interval_s=1, stall_after_s=60)  # type: ignore[arg-type]
    return observer, metrics


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
