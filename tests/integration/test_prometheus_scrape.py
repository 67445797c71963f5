"""A real Prometheus server (Debian's package) scrapes a live gateway; its HTTP API then
answers with the counts by route and the backlog gauges the traffic produced."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from hitl_gateway.settings import HttpSettings

from .gateways import serving
from .kafka_io import CONFIGS, fresh_settings, produce, wait_until

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yml"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A Prometheus server scraping 127.0.0.1:<gateway port> every second, with our rules.
    Yields (gateway port, Prometheus port); stops the server afterwards."""
    gateway_port, prometheus_port = _free_port(), _free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{RULES}]\n"
        "scrape_configs:\n"
        "  - job_name: hitl-gateway\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{gateway_port}']}}]\n"
    )
    with (tmp_path / "prometheus.log").open("wb") as log:
        server = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    yield gateway_port, prometheus_port
    server.terminate()
    server.wait(timeout=30)


async def test_prometheus_scrapes_routes_and_backlog(prometheus: tuple[int, int]) -> None:
    gateway_port, prometheus_port = prometheus
    settings = fresh_settings(policy_dir=CONFIGS / "policies").model_copy(
        update={"http": HttpSettings(port=gateway_port)}
    )
    settings = settings.model_copy(
        update={"runtime": settings.runtime.model_copy(update={"metrics_interval_s": 0.5})}
    )
    async with serving(settings):
        records = [
            (f"c{i}".encode(), orjson.dumps({"id": f"c{i}", "domain": "clinical-summaries"}))
            for i in range(4)
        ] + [
            (
                f"s{i}".encode(),
                orjson.dumps({"id": f"s{i}", "domain": "support-chat", "confidence": 0.99}),
            )
            for i in range(6)
        ]
        await produce(settings.topics.outputs, records)
        base = f"http://127.0.0.1:{prometheus_port}"
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:

            async def value(query: str) -> float | None:
                try:
                    body = (await http.get("/api/v1/query", params={"query": query})).json()
                except httpx.TransportError:
                    return None  # Prometheus still starting
                result = body.get("data", {}).get("result", [])
                return float(result[0]["value"][1]) if result else None

            async def scraped() -> bool:
                held = await value('max(hitl_holds{pool="clinicians"})')
                passed = await value(
                    'sum(hitl_records_routed_total{domain="support-chat",route="pass"})'
                )
                return held == 4 and passed == 6

            await wait_until(scraped, timeout_s=60, interval_s=0.5)
            assert await value('up{job="hitl-gateway"}') == 1
            assert await value('sum(hitl_records_routed_total{route="hold"})') == 4
            rules = (await http.get("/api/v1/rules")).json()["data"]["groups"]
            assert {g["name"] for g in rules} == {"hitl-gateway-recording", "hitl-gateway-alerts"}
