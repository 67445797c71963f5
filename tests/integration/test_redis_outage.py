"""A Redis outage while decisions are applied, SLA checks fall due and reviewers call the API.

Redis is a server of the test's own, stopped with SIGSTOP (every call times out, as in a
failover or a stalled host) and resumed with SIGCONT: pausing it disturbs no other test.
The gateway keeps running, the API answers 503 with a retry hint (never 500), routing and
decisions wait and then apply exactly once, and the SLA sweeper resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import redis

from hitl_gateway.settings import RedisSettings, ReviewSettings

from .gateways import serving, write_reviewers
from .kafka_io import CONFIGS, fresh_settings, produce, read_all, wait_until
from .test_review import GRANTS, Stack

URGENT = (
    "domain: urgent\n"
    "mandatory_review:\n"
    "  pool: clinicians\n"
    "  sla: 3s\n"
    "  escalation: [{after: 1s, pool: senior-clinicians}]\n"
)


@contextlib.contextmanager
def own_redis(data_dir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server on a free loopback port, with append-only persistence."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data_dir.mkdir()
    binary = shutil.which("redis-server")
    assert binary, "redis-server is installed by `make stack-up`"
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "yes", "--dir", str(data_dir)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        proc.wait(10)


async def test_a_redis_outage_pauses_the_gateway_and_loses_nothing(tmp_path: Path) -> None:
    tokens = write_reviewers(tmp_path / "reviewers.yaml", GRANTS)
    policies = tmp_path / "policies"
    policies.mkdir()
    (tmp_path / "pools.yaml").write_text((CONFIGS / "pools.yaml").read_text())
    (tmp_path / "routing.yaml").write_text((CONFIGS / "routing.yaml").read_text())
    (policies / "urgent.yaml").write_text(URGENT)
    with own_redis(tmp_path / "redis") as (url, server):
        base = fresh_settings(policy_dir=policies)
        settings = base.model_copy(
            update={
                "review": ReviewSettings(
                    reviewers_file=tmp_path / "reviewers.yaml", sla_check_interval_s=0.2
                ),
                "redis": RedisSettings(url=url, key_prefix="outage:", socket_timeout_s=0.5),
                # Readiness follows Redis at each gauge sample: several fall within the outage
                # (at the default 5 s, one might not, and the gateway would still look ready).
                "runtime": base.runtime.model_copy(update={"metrics_interval_s": 0.5}),
            }
        )
        async with serving(settings) as (gateway, http):
            s = Stack(settings, gateway, tokens, http)
            held = await s.hold("c1", "urgent", viewer="ana")
            decision = {"decision_id": "d-topic", "item_id": "c1", "reviewer": "ana",
                        "verdict": "approve", "content_hash": held["content_hash"]}  # fmt: skip

            server.send_signal(signal.SIGSTOP)
            try:
                # The API: 503 with a retry hint, on every path that reads Redis.
                posted = await s.decide("ana", "c1", verdict="approve",
                                        content_hash=held["content_hash"])  # fmt: skip
                assert posted.status_code == 503, posted.text
                assert posted.headers["retry-after"] == "1"
                shown = await http.get("/v1/items/c1", headers=s.auth("ana"))
                assert (shown.status_code, shown.headers["retry-after"]) == (503, "1")
                # A decision over the topic, and a new hold whose SLA falls due meanwhile.
                await produce(settings.topics.review_decisions,
                              [(b"c1", orjson.dumps(decision))])  # fmt: skip
                body = {"id": "u2", "domain": "urgent", "output": {"text": "late"}}
                await produce(settings.topics.outputs, [(b"u2", orjson.dumps(body))])
                await asyncio.sleep(4)  # sweeps, routing and the applier all fail meanwhile
                assert not gateway.ready()
                assert gateway.metrics.registry.get_sample_value(
                    "hitl_infrastructure_errors_total", {"component": "redis"}
                ) or gateway.metrics.registry.get_sample_value(
                    "hitl_infrastructure_errors_total", {"component": "kafka"}
                )
            finally:
                server.send_signal(signal.SIGCONT)

            # The decision applies once; the new hold is routed and escalated by the sweeper.
            async def applied() -> bool:
                got = await http.get("/v1/items/c1/decisions/d-topic", headers=s.auth("ana"))
                return got.status_code == 200 and got.json()["state"] == "approved"

            await wait_until(applied, timeout_s=60)

            async def escalated() -> bool:
                item = await http.get("/v1/items/u2", headers=s.auth("ana"))
                return item.status_code == 200 and item.json()["pool"] == "senior-clinicians"

            await wait_until(escalated, timeout_s=60)
            await wait_until(lambda: _ready(gateway), timeout_s=30)
            assert [r.key for r in await read_all(settings.topics.delivered)] == [b"c1"]
            trail = [orjson.loads(r.value) for r in await read_all(settings.topics.audit)]
            decided = [e for e in trail if e["type"] == "decided" and e["item_id"] == "c1"]
            assert len(decided) == 1, "applied exactly once"
            holds = [(r.key, r.value is None) for r in await read_all(settings.topics.holds)]
            assert holds.count((b"u2", False)) == 2  # held, then escalated: never lost


async def _ready(gateway: object) -> bool:
    return bool(gateway.ready())  # type: ignore[attr-defined]
