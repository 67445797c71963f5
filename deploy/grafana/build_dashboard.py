"""Writes deploy/grafana/hitl-gateway.json, the Grafana dashboard for hitl-gateway.

    .venv/bin/python deploy/grafana/build_dashboard.py

The JSON is generated (and checked in) so panels stay consistent; a test proves that every
metric it queries is one the gateway exports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "hitl-gateway.json"
WIDTH = 24


def panel(
    title: str, exprs: list[tuple[str, str]], unit: str, at: tuple[int, int], w: int = 12
) -> dict[str, Any]:
    """A time series panel at grid position ``at`` (x, y), ``w`` columns wide."""
    x, y = at
    return {
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(exprs)
        ],
    }


def quantile(q: float, histogram: str, by: str, window: str) -> str:
    return f"histogram_quantile({q}, sum by ({by}) (rate({histogram}_bucket[{window}])))"


def row(title: str, y: int) -> dict[str, Any]:
    return {
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"x": 0, "y": y, "w": WIDTH, "h": 1},
        "panels": [],
    }


def dashboard() -> dict[str, Any]:
    panels = [
        row("Flow", 0),
        panel(
            "Records routed per second, by route",
            [("sum by (route) (rate(hitl_records_routed_total[5m]))", "{{route}}")],
            "ops",
            (0, 1),
        ),
        panel(
            "Routed per second, by domain",
            [("sum by (domain) (rate(hitl_records_routed_total[5m]))", "{{domain}}")],
            "ops",
            (12, 1),
        ),
        panel(
            "Batch processing time (p99)",
            [
                (
                    quantile(0.99, "hitl_batch_processing_seconds", "le", "5m"),
                    "p99",
                )
            ],
            "s",
            (0, 9),
        ),
        panel(
            "Consumer lag and open transactions",
            [
                ("sum by (partition) (hitl_consumer_lag_records)", "lag p{{partition}}"),
                (
                    "max by (partition) (hitl_last_stable_offset_lag_records)",
                    "LSO lag p{{partition}}",
                ),
            ],
            "short",
            (12, 9),
        ),
        row("Backlog and SLA", 17),
        panel(
            "Items waiting, by pool", [("max by (pool) (hitl_holds)", "{{pool}}")], "short", (0, 18)
        ),
        panel(
            "Oldest waiting item, by pool",
            [("max by (pool) (hitl_oldest_hold_age_seconds)", "{{pool}}")],
            "s",
            (12, 18),
        ),
        panel(
            "Items past SLA, by pool",
            [("max by (pool) (hitl_holds_past_sla)", "{{pool}}")],
            "short",
            (0, 26),
        ),
        panel(
            "Review latency p50 / p99, by pool",
            [
                (
                    quantile(0.5, "hitl_review_latency_seconds", "le, pool", "1h"),
                    "p50 {{pool}}",
                ),
                (
                    quantile(0.99, "hitl_review_latency_seconds", "le, pool", "1h"),
                    "p99 {{pool}}",
                ),
            ],
            "s",
            (12, 26),
        ),
        row("Reviewer capacity and cost", 34),
        panel(
            "Weekly review demand vs capacity (reviewer-hours)",
            [
                ("hitl:review_demand_seconds_per_week:rate1h / 3600", "demand {{pool}}"),
                ("max by (pool) (hitl_pool_capacity_seconds) / 3600", "capacity {{pool}}"),
            ],
            "h",
            (0, 35),
        ),
        panel(
            "Waiting work (reviewer-hours), by pool",
            [("max by (pool) (hitl_review_backlog_seconds) / 3600", "{{pool}}")],
            "h",
            (12, 35),
        ),
        panel(
            "Projected review cost per day, by pool",
            [("hitl:review_cost_usd_per_day:rate1h", "{{pool}}")],
            "currencyUSD",
            (0, 43),
        ),
        panel(
            "Decisions per hour, by verdict",
            [
                (
                    'sum by (verdict) (rate(hitl_decisions_total{status="applied"}[1h])) * 3600',
                    "{{verdict}}",
                )
            ],
            "short",
            (12, 43),
        ),
        row("Errors", 51),
        panel(
            "Dead letters per second, by reason",
            [("sum by (reason) (rate(hitl_records_dead_lettered_total[5m]))", "{{reason}}")],
            "ops",
            (0, 52),
        ),
        panel(
            "Refused decisions per hour, by reason",
            [("sum by (reason) (rate(hitl_decisions_refused_total[1h])) * 3600", "{{reason}}")],
            "short",
            (12, 52),
        ),
        panel(
            "Retried infrastructure errors and aborted transactions",
            [
                (
                    "sum by (component) (rate(hitl_infrastructure_errors_total[5m]))",
                    "{{component}}",
                ),
                ('sum(rate(hitl_kafka_transactions_total{outcome="abort"}[5m]))', "aborts"),
            ],
            "ops",
            (0, 60),
        ),
        panel(
            "Policy version and reloads",
            [
                ("max by (version) (hitl_policy_info)", "version {{version}}"),
                (
                    "sum by (outcome) (increase(hitl_policy_reloads_total[1h]))",
                    "reloads {{outcome}}",
                ),
            ],
            "short",
            (12, 60),
        ),
        row("Calibration", 68),
        panel(
            "Judge-human agreement (95% Wilson interval), by domain and stratum",
            [
                ("max by (domain, stratum) (hitl_judge_agreement_ratio)", "{{domain}} {{stratum}}"),
                (
                    "max by (domain, stratum) (hitl_judge_agreement_lower_bound)",
                    "{{domain}} {{stratum}} low",
                ),
            ],
            "percentunit",
            (0, 69),
        ),
        panel(
            "Reviewer agreement (Krippendorff's alpha), by pool and dimension, and pool targets",
            [
                (
                    "max by (pool, rubric, dimension) (hitl_reviewer_alpha)",
                    "{{pool}} {{rubric}} {{dimension}}",
                ),
                # Only the pools with an alpha: every pool in pools.yaml has a target.
                (
                    "max by (pool) (hitl_reviewer_alpha_target)"
                    " and on (pool) max by (pool) (hitl_reviewer_alpha)",
                    "{{pool}} target",
                ),
            ],
            "short",
            (12, 69),
        ),
        panel(
            "Reviewers flagged for drifting from consensus; gold accuracy",
            [
                ("sum by (pool) (max by (pool, reviewer) (hitl_reviewer_flagged))", "{{pool}}"),
                (
                    "min by (pool) (hitl_reviewer_gold_accuracy_ratio)",
                    "{{pool}} lowest gold accuracy",
                ),
            ],
            "short",
            (0, 77),
        ),
        panel(
            "Live plan: reviewer headcount needed and capacity used, by pool",
            [
                ("hitl:plan_headcount:rate1h", "{{pool}} headcount"),
                ("hitl:plan_capacity_used_ratio:rate1h", "{{pool}} capacity used"),
            ],
            "short",
            (12, 77),
        ),
        row("Automation bias", 85),
        panel(
            "Time on item (median over 1 h) vs the rubric's minimum, by pool and rubric",
            [
                ("hitl:review_time_on_item_seconds:p50_1h", "{{pool}} {{rubric}}"),
                ("max by (rubric) (hitl_rubric_min_review_seconds)", "{{rubric}} minimum"),
            ],
            "s",
            (0, 86),
        ),
        panel(
            "Approved without edit (share of applied decisions, 1 h), by pool",
            [("hitl:approve_without_edit_ratio:rate1h", "{{pool}}")],
            "percentunit",
            (12, 86),
        ),
    ]
    return {
        "title": "hitl-gateway",
        "uid": "hitl-gateway",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "tags": ["hitl-gateway"],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                }
            ]
        },
        "panels": panels,
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"wrote {OUT}")
