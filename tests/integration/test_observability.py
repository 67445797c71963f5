"""Metrics on a live gateway: backlog and lag gauges, health endpoints, and a scrape that
Prometheus' own linter (promtool check metrics) accepts without a word."""

from __future__ import annotations

import asyncio
import subprocess

import orjson
from prometheus_client.parser import text_string_to_metric_families

from .gateways import serving
from .kafka_io import CONFIGS, fresh_settings, produce, wait_until


async def test_live_scrape_has_backlog_and_lag_and_passes_promtool() -> None:
    settings = fresh_settings(policy_dir=CONFIGS / "policies")
    async with serving(settings) as (gateway, http):
        records = [
            (f"c{i}".encode(), orjson.dumps({"id": f"c{i}", "domain": "clinical-summaries"}))
            for i in range(7)
        ] + [(b"p1", orjson.dumps({"id": "p1", "domain": "support-chat", "confidence": 0.99}))]
        await produce(settings.topics.outputs, records)

        async def processed() -> bool:
            return gateway.pipeline.committed_records >= len(records)

        await wait_until(processed, timeout_s=60)
        await gateway.observer.sample()
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 200
        scrape = (await http.get("/metrics")).text

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scrape)
        for s in family.samples
    }
    assert samples[("hitl_holds", (("pool", "clinicians"),))] == 7
    assert samples[("hitl_review_backlog_seconds", (("pool", "clinicians"),))] == 7 / 30 * 3_600
    assert samples[("hitl_pool_capacity_seconds", (("pool", "clinicians"),))] == 50 * 3_600
    assert samples[("hitl_review_tasks_total", (("pool", "clinicians"),))] == 7
    assert samples[("hitl_oldest_hold_age_seconds", (("pool", "clinicians"),))] >= 0
    assert samples[("hitl_holds_by_domain", (("domain", "clinical-summaries"),))] == 7
    assert samples[("hitl_end_to_end_latency_seconds_count", ())] == 1  # the one passed record
    lag = [v for (name, _), v in samples.items() if name == "hitl_consumer_lag_records"]
    assert lag, "lag is exported per partition"
    assert all(v == 0 for v in lag)  # all caught up
    lint = await asyncio.to_thread(
        subprocess.run,
        ["promtool", "check", "metrics"],
        input=scrape,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (lint.returncode, lint.stdout + lint.stderr) == (0, "")
