"""Sampled gauges: review backlog and capacity per pool, Kafka lag per partition, and the
progress watchdog behind ``/readyz``.

Counters are updated where the work happens; this samples state that lives elsewhere (the
shared hold index, the consumer's offsets) every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from hitl_gateway.calibration.judge import Status
from hitl_gateway.calibration.store import CalibrationStore, Summary
from hitl_gateway.errors import InfrastructureError
from hitl_gateway.holds import HoldIndex
from hitl_gateway.metrics import GatewayMetrics
from hitl_gateway.pipeline import Pipeline
from hitl_gateway.policy.store import PolicyStore

log = structlog.get_logger(__name__)


class Observer:
    def __init__(
        self,
        metrics: GatewayMetrics,
        index: HoldIndex,
        calibration: CalibrationStore,
        policies: PolicyStore,
        pipeline: Pipeline,
        *,
        interval_s: float,
        stall_after_s: float,
    ) -> None:
        self._metrics = metrics
        self._index = index
        self._calibration = calibration
        self._policies = policies
        self._pipeline = pipeline
        self._interval_s = interval_s
        self._stall_after_s = stall_after_s
        self.stalled = False
        self.redis_ok = True
        self.kafka_ok = True

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sample()
            except InfrastructureError as exc:
                log.warning("metrics_sample_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval_s)

    async def sample(self) -> None:
        m = self._metrics
        self.kafka_ok = await self._pipeline.broker_reachable()
        now_ms = int(time.time() * 1000)
        defined = self._policies.current.pools
        for name, pool in defined.items():
            m.pool_capacity_seconds.labels(pool=name).set(pool.hours_per_week * 3_600)
            m.pool_cases_per_hour.labels(pool=name).set(pool.cases_per_hour)
            m.pool_cost_per_hour.labels(pool=name).set(pool.cost_per_hour_usd)
            m.reviewer_alpha_target.labels(pool=name).set(pool.agreement_target)
            m.reviewer_alpha_min_items.labels(pool=name).set(pool.agreement_min_items)
        for name, rubric in self._policies.current.routing.rubrics.items():
            if rubric.min_review_seconds is not None:
                m.rubric_min_review_seconds.labels(rubric=name).set(rubric.min_review_seconds)
        try:
            # Pools the policies define, and any the index holds items for (``unassigned``
            # from earlier versions, a pool since removed) so that backlog is visible too.
            names = sorted(set(defined) | await self._index.pools())
            for name in names:
                count, oldest, past = await self._index.backlog(name, now_ms)
                m.holds.labels(pool=name).set(count)
                m.holds_past_sla.labels(pool=name).set(past)
                m.oldest_hold_age.labels(pool=name).set((now_ms - oldest) / 1000 if oldest else 0)
                if name in defined:
                    hours = count / defined[name].cases_per_hour
                    m.backlog_seconds.labels(pool=name).set(hours * 3_600)
        except InfrastructureError:
            self.redis_ok = False
            raise
        self.redis_ok = True
        await self._sample_calibration()
        domains = sorted(self._policies.current.policies)
        for domain, count in (await self._index.domain_counts(domains)).items():
            m.holds_by_domain.labels(domain=domain).set(count)
        behind = 0
        for tp, lag, lso_lag in await self._pipeline.lag():
            labels = {"topic": tp.topic, "partition": str(tp.partition)}
            m.consumer_lag.labels(**labels).set(lag)
            m.lso_lag.labels(**labels).set(lso_lag)
            behind += lag
        since_commit = time.monotonic() - self._pipeline.last_commit_monotonic
        m.last_commit_age.set(since_commit)
        # Stalled: records are waiting, yet nothing has been committed for a long time
        # (a consumer that silently stopped fetching after a broker restart looks like this).
        was = self.stalled
        self.stalled = behind > 0 and since_commit > self._stall_after_s
        if self.stalled and not was:
            log.error("consumer_stalled", records_behind=behind, since_commit_s=round(since_commit))

    async def _sample_calibration(self) -> None:
        m = self._metrics
        for summary in await self._calibration.summaries():
            _set_calibration(m, summary)


def _set_calibration(m: GatewayMetrics, summary: Summary) -> None:
    labels, f = summary.labels, summary.fields
    if summary.kind == "judge":
        m.judge_cases.labels(**labels).set(float(f.get("cases", 0)))
        for status in Status:
            current = f.get("status") == status.value
            m.judge_status.labels(**labels, status=status.value).set(1 if current else 0)
        if "agreement" in f and f.get("status") != Status.INSUFFICIENT_DATA:
            m.judge_agreement.labels(**labels).set(float(f["agreement"]))
            m.judge_kappa.labels(**labels).set(float(f["kappa"]))
            m.judge_agreement_low.labels(**labels).set(float(f["low"]))
            m.judge_agreement_high.labels(**labels).set(float(f["high"]))
    elif summary.kind == "alpha":
        m.reviewer_alpha_items.labels(**labels).set(float(f["items"]))
        m.reviewer_alpha_excluded.labels(**labels).set(float(f.get("excluded", 0)))
        if f.get("alpha"):
            m.reviewer_alpha.labels(**labels).set(float(f["alpha"]))
        else:  # every rating left out (ordinal rubric): no figure rather than a stale one
            m.reviewer_alpha.remove(labels["pool"], labels["rubric"], labels["dimension"])
    elif summary.kind == "consensus":
        m.reviewer_consensus.labels(**labels).set(float(f["agreement"]))
        m.reviewer_flagged.labels(**labels).set(1 if f.get("status") == "flagged" else 0)
    elif summary.kind == "gold":
        m.reviewer_gold_accuracy.labels(**labels).set(float(f["accuracy"]))
        m.reviewer_gold_items.labels(**labels).set(float(f["items"]))
