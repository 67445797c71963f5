"""The shipped Prometheus rules: valid, unit-tested with promtool, and querying only metrics
the gateway exports."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import orjson
import yaml

from hitl_gateway.metrics import GatewayMetrics

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], cwd=RULES, capture_output=True, text=True, timeout=120, check=False
    )


def test_rules_are_valid() -> None:
    result = _promtool("check", "rules", "rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_and_stays_quiet_as_specified() -> None:
    result = _promtool("test", "rules", "rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {
        rule["alert"]
        for group in yaml.safe_load((RULES / "rules.yml").read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    tested = set(re.findall(r"alertname: (\w+)", (RULES / "rules.test.yml").read_text()))
    assert alerts == tested, f"alerts without a test: {sorted(alerts - tested)}"


def exported_names() -> set[str]:
    names = set()
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "info": ("_info",),
    }
    for family in GatewayMetrics().registry.collect():
        names.add(family.name)
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ())}
    return names


def test_rules_query_only_exported_metrics() -> None:
    text = (RULES / "rules.yml").read_text()
    queried = set(re.findall(r"\b(hitl_[a-z_]+)\b", text))
    missing = sorted(queried - exported_names())
    assert not missing, f"rules query metrics the gateway does not export: {missing}"


def test_dashboard_queries_only_exported_metrics_and_recorded_series() -> None:
    dashboard = orjson.loads((RULES.parent / "grafana" / "hitl-gateway.json").read_bytes())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    metrics = {m for e in exprs for m in re.findall(r"\b(hitl_[a-z_]+)\b", e)}
    missing = sorted(metrics - exported_names())
    assert not missing, f"the dashboard queries metrics the gateway does not export: {missing}"
    recorded = set(re.findall(r"record: (\S+)", (RULES / "rules.yml").read_text()))
    used = {m for e in exprs for m in re.findall(r"\b(hitl:[a-z0-9_:]+)", e)}
    assert used <= recorded, f"unknown recording rules: {sorted(used - recorded)}"
    titles = {p["title"] for p in dashboard["panels"] if p["type"] == "row"}
    assert titles == {
        "Flow", "Backlog and SLA", "Reviewer capacity and cost", "Errors", "Calibration",
        "Automation bias",
    }  # fmt: skip


def test_checked_in_dashboard_is_what_the_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location(
        "build_dashboard", RULES.parent / "grafana" / "build_dashboard.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shipped = orjson.loads((RULES.parent / "grafana" / "hitl-gateway.json").read_bytes())
    assert shipped == module.dashboard(), "run: .venv/bin/python deploy/grafana/build_dashboard.py"
